"""The region mosaic: a georeferenced Zarr v3 store, written atomically with provenance.

Readers get it back with ``xr.open_zarr(path)``; ``ds[MOSAIC_VAR].rio.crs`` is the grid's CRS.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec

if TYPE_CHECKING:  # imported where used: the inference actors import this module, not xarray
    import xarray as xr

#: Name of the data variable in the mosaic store.
MOSAIC_VAR = "optical"


class MosaicExistsError(Sar2OptError, FileExistsError):
    """The output mosaic is already there and ``overwrite`` was not asked for."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, so a mosaic names the exact weights that produced it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_mosaic_path(path: str | Path, overwrite: bool = False) -> Path:
    """Fail early (before hours of inference) if ``path`` exists and may not be replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise MosaicExistsError(f"output {path} exists; pass --overwrite to replace it")
    return path


def _times(times: Sequence[str]) -> np.ndarray:
    """ISO times (any offset, 'Z') -> naive UTC datetime64[ns], as the cube stores them."""
    import pandas as pd

    idx = pd.to_datetime(list(times), utc=True, format="ISO8601")
    return idx.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def mosaic_dataset(
    data: np.ndarray,
    grid: GridSpec,
    times: Sequence[str],
    bands: Sequence[str],
    attrs: Mapping | None = None,
    *,
    tile_px: int = 256,
) -> xr.Dataset:
    """The in-memory Dataset ``write_mosaic`` stores (dims time, band, y, x; CRS; chunks)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    data = np.asarray(data, dtype=np.float32)
    expect = (len(times), len(bands), *grid.shape)
    if data.shape != expect:
        raise ValueError(f"data shape {data.shape} != (time, band, y, x) {expect}")
    da = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": _times(times),
            "band": np.array([str(b) for b in bands], dtype=object),  # variable-length strings
            "y": grid.ys(),
            "x": grid.xs(),
        },
        name=MOSAIC_VAR,
        attrs={"long_name": "predicted surface reflectance", "units": "1"},
    )
    ds = da.to_dataset()
    ds = ds.rio.write_crs(f"EPSG:{grid.epsg}").rio.write_transform(grid.transform)
    ds[MOSAIC_VAR] = ds[MOSAIC_VAR].rio.write_nodata(np.nan, encoded=False)
    ds.attrs.update(dict(attrs or {}))
    ds.attrs["grid"] = grid.to_dict()
    ds.attrs["times_iso"] = [str(t) for t in times]
    chunks = (1, len(bands), min(tile_px, grid.height), min(tile_px, grid.width))
    ds[MOSAIC_VAR].encoding["chunks"] = chunks
    # List spatial_ref under "coordinates" so plain open_zarr keeps it as a coordinate and
    # .rio.crs works without decode_coords="all".
    ds[MOSAIC_VAR].encoding["coordinates"] = "spatial_ref"
    return ds


def write_mosaic(
    path: str | Path,
    data: np.ndarray,
    grid: GridSpec,
    times: Sequence[str],
    bands: Sequence[str],
    attrs: Mapping | None = None,
    *,
    tile_px: int = 256,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` (time, band, y, x) as Zarr v3 at ``path``, atomically.

    The store is built in ``path.with_suffix('.tmp-<pid>')`` and renamed into place, so a
    failure never leaves a half-written mosaic at ``path``. An existing ``path`` is only
    replaced with ``overwrite=True`` (and only once the new store is complete).
    """
    path = check_mosaic_path(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = mosaic_dataset(data, grid, times, bands, attrs, tile_px=tile_px)
    pid = os.getpid()
    tmp = path.with_suffix(f".tmp-{pid}")
    old = path.with_suffix(f".old-{pid}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            # Consolidated metadata is a v3 extension; it keeps open_zarr fast and quiet.
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)  # put the previous mosaic back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path
