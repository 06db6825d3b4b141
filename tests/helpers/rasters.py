"""Tiny generated GeoTIFFs and STAC items for the loaders' tests (no server needed)."""

import numpy as np
import rasterio

from sar2opt.cube.clean_s1 import db_to_linear
from sar2opt.grid import lonlat_bounds

#: The S1 GeoTIFFs' nodata (float32 linear power).
S1_TIF_NODATA = -32768


def write_tif(path, arr, grid, nodata, dtype) -> str:
    """A one-band GeoTIFF of ``arr`` on ``grid``; returns its path."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=arr.shape[-2],
        width=arr.shape[-1],
        count=1,
        dtype=dtype,
        crs=grid.crs,
        transform=grid.transform,
        nodata=nodata,
    ) as dst:
        dst.write(arr.astype(dtype), 1)
    return str(path)


def write_s1_assets(folder, suffix, grid, rng: np.random.Generator, bands=("vv", "vh")) -> dict:
    """One S1 GeoTIFF per band on ``grid`` (``<band><suffix>.tif`` in ``folder``): linear
    power of dB drawn uniform in [-20, -5) from ``rng``, band by band; the hrefs by band."""
    return {
        b: write_tif(
            folder / f"{b}{suffix}.tif",
            db_to_linear(rng.uniform(-20, -5, grid.shape).astype("float32")),
            grid,
            S1_TIF_NODATA,
            "float32",
        )
        for b in bands
    }


def make_item(iid, dt, assets, grid, extra=None) -> dict:
    """A STAC item (dict) over ``grid`` whose assets are the given hrefs (an S1 item unless
    ``extra`` overrides the properties)."""
    w, s, e, n = lonlat_bounds(grid)
    props = {
        "datetime": dt,
        "platform": "sentinel-1a",
        "sat:orbit_state": "descending",
        "proj:epsg": grid.epsg,
        "proj:shape": list(grid.shape),
        "proj:transform": list(grid.transform)[:6],
    } | (extra or {})
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": iid,
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": props,
        "links": [],
        "assets": {
            k: {"href": v, "type": "image/tiff", "roles": ["data"]} for k, v in assets.items()
        },
    }
