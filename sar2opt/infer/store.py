"""The output store written block by block: Zarr v3, one chunk per (time, block), no accumulator.

``create_store`` writes only metadata and coordinates (the data variables are lazy NaN that
are never computed); ``write_block`` fills one chunk of every variable; unwritten chunks
read as the fill value (NaN / source 0), so blocks outside the AOI cost no storage.
Chunks are one block wide and carry all bands of one time step, so no two blocks ever
share a chunk. With ``shard_blocks`` > 1 the chunks of ``shard_blocks`` neighbouring blocks
of a block row are one shard (one file): zarr's cost is per stored object (~2 ms of its
async machinery each, more than compressing the block), and the pipeline gives each task
whole shards (``run.strip_tasks``), so still no two writers share one.

Variables, in this order (readers take the first as the image):
``optical`` (time, band, y, x) float32, ``source`` (time, y, x) uint8 (see
``composite.SOURCE_MEANINGS``), ``uncertainty`` (time, y, x) float32.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sar2opt.grid import GridSpec
from sar2opt.infer.composite import SOURCE_MEANINGS
from sar2opt.infer.mosaic import MOSAIC_VAR, _times

if TYPE_CHECKING:  # imported where used: the actors only write chunks, with zarr
    import xarray as xr

SOURCE_VAR = "source"
UNCERTAINTY_VAR = "uncertainty"


def store_dataset(
    grid: GridSpec,
    times: Sequence[str],
    bands: Sequence[str],
    attrs: Mapping | None,
    block_px: int,
    shard_blocks: int = 1,
) -> xr.Dataset:
    """Lazy (dask, all NaN) Dataset with the store's variables, coords, CRS, chunks and
    shards (``shard_blocks`` blocks of a block row; 1: no sharding)."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    if shard_blocks < 1:
        raise ValueError(f"shard_blocks must be >= 1, got {shard_blocks}")
    nt, nb = len(times), len(bands)
    h, w = grid.shape
    bh, bw = min(block_px, h), min(block_px, w)
    sw = min(bw * shard_blocks, w)  # dask chunks: whole shards (xarray checks that)
    coords = {
        "time": _times(times),
        "band": np.array([str(b) for b in bands], dtype=object),
        "y": grid.ys(),
        "x": grid.xs(),
    }
    ds = xr.Dataset(
        {
            MOSAIC_VAR: (
                ("time", "band", "y", "x"),
                da.full((nt, nb, h, w), np.nan, dtype="float32", chunks=(1, nb, bh, sw)),
                {"long_name": "surface reflectance (composite or prediction)", "units": "1"},
            ),
            SOURCE_VAR: (
                ("time", "y", "x"),
                da.zeros((nt, h, w), dtype="uint8", chunks=(1, bh, sw)),
                {
                    "long_name": "where each optical pixel comes from",
                    "flag_values": list(SOURCE_MEANINGS),
                    "flag_meanings": " ".join(
                        v.replace(" ", "_") for v in SOURCE_MEANINGS.values()
                    ),
                },
            ),
            UNCERTAINTY_VAR: (
                ("time", "y", "x"),
                da.full((nt, h, w), np.nan, dtype="float32", chunks=(1, bh, sw)),
                {
                    "long_name": "spread of the synthesis over hypotheses (std, band mean)",
                    "units": "1",
                },
            ),
        },
        coords=coords,
    )
    ds = ds.rio.write_crs(f"EPSG:{grid.epsg}").rio.write_transform(grid.transform)
    for name in (MOSAIC_VAR, UNCERTAINTY_VAR):
        ds[name] = ds[name].rio.write_nodata(np.nan, encoded=False)
    # ``source`` keeps no _FillValue attr: xarray would decode its 0 (no data) to NaN and the
    # flags to float; unwritten chunks still read 0 (the array's fill value).
    for name in (MOSAIC_VAR, SOURCE_VAR, UNCERTAINTY_VAR):
        ds[name].encoding["coordinates"] = "spatial_ref"  # keep .rio.crs on plain open_zarr
        lead = (1, nb) if name == MOSAIC_VAR else (1,)
        ds[name].encoding["chunks"] = (*lead, bh, bw)
        if shard_blocks > 1:
            ds[name].encoding["shards"] = (*lead, bh, bw * shard_blocks)
    ds.attrs.update(dict(attrs or {}))
    ds.attrs["grid"] = grid.to_dict()
    ds.attrs["times_iso"] = [str(t) for t in times]
    ds.attrs["block_px"] = int(block_px)
    ds.attrs["shard_blocks"] = int(shard_blocks)
    return ds


def _to_zarr(ds: xr.Dataset, path: Path, **kw) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message=".*not recognized as a component")  # ledger
        ds.to_zarr(path, zarr_format=3, compute=False, consolidated=True, **kw)


def create_store(
    path: str | Path,
    grid: GridSpec,
    times: Sequence[str],
    bands: Sequence[str],
    attrs: Mapping | None,
    block_px: int,
    shard_blocks: int = 1,
) -> Path:
    """Metadata and coordinates of an empty store at ``path`` (which must not exist); its
    shards hold ``shard_blocks`` blocks of a block row (``store_dataset``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = store_dataset(grid, times, bands, attrs, block_px, shard_blocks)
    _to_zarr(ds, path, mode="w-")
    return path


def shard_blocks(path: str | Path) -> int:
    """Blocks of a block row per shard of the store (1 for stores written before sharding)."""
    return int(read_attrs(path).get("shard_blocks", 1))


def read_attrs(path: str | Path) -> dict:
    """The store's attributes (from its root ``zarr.json``, no array opened)."""
    meta = json.loads((Path(path) / "zarr.json").read_text())
    return dict(meta.get("attributes", {}))


def update_attrs(path: str | Path, attrs: Mapping) -> None:
    """Merge ``attrs`` into the store's attributes and re-consolidate its metadata."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    g.attrs.update(dict(attrs))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message=".*not recognized as a component")  # ledger
        zarr.consolidate_metadata(str(path))
    _group.cache_clear()


def time_length(path: str | Path) -> int:
    """Length of the store's ``time`` array (may exceed ``times_iso`` after a killed append)."""
    meta = json.loads((Path(path) / "time" / "zarr.json").read_text())
    return int(meta["shape"][0])


def truncate_times(path: str | Path, n: int) -> None:
    """Shrink every array along ``time`` to ``n`` steps (drops their chunks beyond ``n``)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    for _, arr in g.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "time" and arr.shape[0] > n:
            arr.resize((n, *arr.shape[1:]))
    update_attrs(path, {})


def append_times(path: str | Path, times: Sequence[str], attrs: Mapping | None = None) -> list[int]:
    """Grow the time axis by ``times`` (lazy NaN, nothing computed); their indices.

    ``times_iso`` is updated last, so it is the commit: arrays longer than it (an append
    killed half-way) are first cut back to it, and the append is done again.
    """
    import xarray as xr

    old = read_attrs(path)
    if time_length(path) > len(old["times_iso"]):
        truncate_times(path, len(old["times_iso"]))
    grid = GridSpec.from_dict(old["grid"])
    bands = list(xr.open_zarr(path)["band"].values)
    k = int(old.get("shard_blocks", 1))  # the store's layout: the new steps get the same
    ds = store_dataset(grid, times, bands, None, int(old["block_px"]), k)
    ds = ds.drop_vars(["band", "y", "x", "spatial_ref"])
    ds.attrs = old  # to_zarr rewrites the group's attrs: keep them (times_iso still the old)
    for name in ds.data_vars:  # the store has them; xarray refuses to write _FillValue twice
        ds[name].attrs = {}
    _to_zarr(ds, Path(path), append_dim="time")
    n0 = len(old["times_iso"])
    update_attrs(path, {**dict(attrs or {}), "times_iso": [*old["times_iso"], *map(str, times)]})
    return list(range(n0, n0 + len(times)))


@lru_cache(maxsize=4)
def _group(path: str):
    import zarr

    return zarr.open_group(path, mode="r+")


def write_block(
    path: str | Path,
    t: int,
    core: tuple[int, int, int, int],
    optical: np.ndarray,
    source: np.ndarray,
    uncertainty: np.ndarray,
) -> None:
    """Write one block (its whole chunks) of time step ``t``: optical (C, h, w), source and
    uncertainty (h, w), at the core window ``(row0, col0, row1, col1)``."""
    g = _group(str(path))
    r0, c0, r1, c1 = core
    g[MOSAIC_VAR][t, :, r0:r1, c0:c1] = np.asarray(optical, np.float32)
    g[SOURCE_VAR][t, r0:r1, c0:c1] = np.asarray(source, np.uint8)
    g[UNCERTAINTY_VAR][t, r0:r1, c0:c1] = np.asarray(uncertainty, np.float32)


def write_blocks(
    path: str | Path,
    blocks: Sequence[tuple[int, tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """Write ``(t, core, optical, source, uncertainty)`` blocks (as :func:`write_block`).

    Blocks of one time step and block row that touch left to right are written as one window:
    one zarr call per array instead of one per block (each call costs ~2 ms of zarr's async
    machinery, as much as compressing the block). Callers pass whole shards' worth of blocks
    (a strip), so no other writer touches them.
    """
    todo = sorted(blocks, key=lambda b: (b[0], b[1][0], b[1][2], b[1][1]))
    i = 0
    while i < len(todo):
        t, (r0, c0, r1, c1), *_ = todo[i]
        j = i + 1
        while (
            j < len(todo)
            and todo[j][0] == t
            and todo[j][1][0] == r0
            and (todo[j][1][2] == r1 and todo[j][1][1] == todo[j - 1][1][3])
        ):
            j += 1
        run = todo[i:j]
        write_block(
            path,
            t,
            (r0, c0, r1, run[-1][1][3]),
            np.concatenate([np.asarray(b[2], np.float32) for b in run], axis=-1),
            np.concatenate([np.asarray(b[3], np.uint8) for b in run], axis=-1),
            np.concatenate([np.asarray(b[4], np.float32) for b in run], axis=-1),
        )
        i = j
