"""Zarr stores written atomically: a failed run never leaves a half-written store behind."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import xarray as xr

from sar2opt.errors import Sar2OptError


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse to clobber an existing store unless asked; create the parent directory."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise Sar2OptError(f"output {path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_zarr_atomic(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``ds`` as Zarr v3 into a temporary sibling, then rename it into place."""
    path = check_output_path(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    for var in ds.data_vars.values():
        if "spatial_ref" in ds.coords and var.dims[-2:] == ("y", "x"):
            # list spatial_ref under "coordinates" so a plain xr.open_zarr keeps .rio.crs
            var.encoding["coordinates"] = "spatial_ref"
    try:
        with warnings.catch_warnings():
            # consolidated metadata lets a plain xr.open_zarr(path) open the store without
            # warnings; zarr notes it is not (yet) in the v3 spec.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
