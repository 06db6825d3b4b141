"""Cube stage: load STAC items onto one GridSpec, clean, pair S1 with S2, store as Zarr."""
