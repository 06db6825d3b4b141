"""Cloud-Optimized GeoTIFF writer: the one way the catalog stage puts rasters on disk.

COGs (internal tiles, overviews, deflate) are what Planetary Computer serves, so readers
downstream (stackstac, rioxarray, GDAL windowed reads) behave the same on local and remote data.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from sar2opt.grid import GridSpec

_BLOCK = 256


@functools.cache
def _has_cog_driver() -> bool:
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def write_cog(
    path: str | Path,
    array: np.ndarray,
    grid: GridSpec,
    nodata: float | int | None,
    dtype: str | np.dtype,
) -> Path:
    """Write ``array`` ((band, y, x) or (y, x)) as a deflate-compressed COG on ``grid``.

    NaNs are replaced by ``nodata`` (when it is a number) so that files never carry bare NaN
    that STAC metadata cannot describe. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"array must be (band, y, x) or (y, x), got shape {np.shape(array)}")
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"array shape {arr.shape[1:]} does not match grid shape {grid.shape}")
    dtype = np.dtype(dtype)
    if arr.dtype.kind == "f" and nodata is not None and not np.isnan(nodata):
        arr = np.where(np.isnan(arr), nodata, arr)
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(arr), info.min, info.max)
    arr = arr.astype(dtype, copy=False)

    predictor = 3 if dtype.kind == "f" else 2
    profile = {
        "width": grid.width,
        "height": grid.height,
        "count": arr.shape[0],
        "dtype": dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": predictor,
    }
    if _has_cog_driver():
        profile.update(driver="COG", blocksize=_BLOCK, overview_resampling="average")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    else:  # pragma: no cover - GDAL < 3.1
        profile.update(driver="GTiff", tiled=True, blockxsize=_BLOCK, blockysize=_BLOCK)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
            factors = [f for f in (2, 4, 8, 16, 32) if min(grid.shape) // f >= _BLOCK // 2]
            if factors:
                dst.build_overviews(factors, Resampling.average)
    return path
