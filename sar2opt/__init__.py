"""sar2opt: Sentinel-1 SAR to cloud-free optical imagery at region scale.

The data flows one way: STAC -> cube (Zarr) -> patches -> model -> Ray Train -> checkpoint
-> Ray Data inference -> mosaic (Zarr) -> analysis. The sub-packages follow that order.
"""

__version__ = "0.1.0"
