"""The mosaic store: its layout (variables, attributes, paths) and every write to it.

This module is the one place that knows what a mosaic store is; everything else imports its
names. A store is Zarr v3, one chunk per (time, block), no accumulator:

* variables (readers take them by name: without consolidated metadata xarray lists them in
  no fixed order): ``optical`` (time, band, y, x) float32, ``source`` (time, y, x) uint8
  (``composite.SOURCE_MEANINGS``), ``uncertainty`` (time, y, x) float32, ``obs_time``
  (time, y, x) when the observation each pixel shows was made (int32 seconds, CF ``units``:
  xarray reads datetime64, NaT for none);
* ``create_store`` writes only metadata and coordinates (the variables are lazy NaN that are
  never computed); ``write_block`` fills one chunk of every variable; unwritten chunks read
  as the fill value (NaN / source 0), so blocks outside the AOI cost no storage. Chunks are
  one block wide and carry all bands of one time step, so no two blocks share a chunk. With
  ``shard_blocks`` > 1 the chunks of ``shard_blocks`` neighbouring blocks of a block row are
  one shard (one file): zarr's cost is per stored object (~2 ms of its async machinery
  each, more than compressing the block), and the pipeline gives each task whole shards
  (``run.strip_tasks``), so still no two writers share one;
* paths: an AOI in one UTM zone is one store at ``<out>``; across zones ``<out>`` is a folder
  of ``<zone>.zarr``. A run writes into ``<out>.partial`` and ``finish`` renames it into
  place; ``<out>.lock`` is the writers' lock (``ledger.StoreLock``), ``_sar2opt/ledger.txt``
  inside a store the blocks written (``ledger.TileLedger``), ``stac/`` its STAC items;
* only what the Zarr v3 spec defines: band names are ``string`` (vlen-utf8, a registered v3
  data type), and no consolidated metadata (a zarr-python extension, "not part of the v3
  spec"). Without it readers list the store's root, so the folders of files that are not
  arrays (``_sar2opt/``, ``stac/``) are empty Zarr groups: zarr lists them without warning
  that they are "not recognized as a component". Open with
  ``xr.open_zarr(path, consolidated=False)`` (``None``, the default, tries consolidated
  metadata first and warns when there is none);
* resume: a store records the settings its pixels depend on (``SETTINGS_ATTR``) and their
  fingerprint; ``same_run`` is the one test of whether a store may be resumed or appended to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.infer.composite import SOURCE_MEANINGS

if TYPE_CHECKING:  # imported where used: the actors only write chunks, with zarr
    import xarray as xr

#: Data variables, in the order they are written (the first is the image).
OPTICAL_VAR = "optical"
SOURCE_VAR = "source"
UNCERTAINTY_VAR = "uncertainty"
#: What ``uncertainty`` holds (store, STAC and COG export say the same).
UNCERTAINTY_LONG_NAME = (
    "expected |error| of the optical (band mean, reflectance): the spread over hypotheses, "
    "calibrated on validation blocks unless the store attr uncertainty_calibration says otherwise"
)
OBS_TIME_VAR = "obs_time"  # when the observation each pixel took was made
VARS = (OPTICAL_VAR, SOURCE_VAR, UNCERTAINTY_VAR, OBS_TIME_VAR)
#: ``obs_time`` on disk: int32 seconds since this instant (to 2082), -1 for none; xarray
#: decodes it to datetime64 (CF ``units``), NaT where none (``periods.obs_seconds``).
OBS_TIME_UNITS = "seconds since 2014-01-01T00:00:00"
OBS_TIME_FILL = -1
#: Layers that say how far to trust ``optical`` (analysis masks by them).
QUALITY_VARS = (UNCERTAINTY_VAR, SOURCE_VAR)

#: Attributes every store has.
GRID_ATTR = "grid"  # GridSpec.to_dict()
TIMES_ATTR = "times_iso"  # the time axis as written; its update commits an append
BLOCK_PX_ATTR = "block_px"
SHARD_BLOCKS_ATTR = "shard_blocks"
#: Attributes of a run: what made the store and whether it is finished.
SETTINGS_ATTR = "run_settings"  # what the pixels depend on besides the dates
FINGERPRINT_ATTR = "run_fingerprint"  # hash of SETTINGS_ATTR
COMPLETE_ATTR = "sar2opt_complete"  # every block of every time step listed is written
PENDING_ATTR = "pending_times"  # time steps appended by the monitor, not all written yet
ZONE_ATTR = "zone"
CONFIG_ATTR = "config"  # the run's Config as a dict
S1_IDS_ATTR = "s1_item_ids"  # per time step, the S1 items read
CHECKPOINT_SHA256_ATTR = "checkpoint_sha256"
END_ATTR = "end"  # last date searched
PERIOD_ATTR = "period"  # what a time step is: "acquisition", or a period ("1M", edges ...)
PROVISIONAL_ATTR = "provisional_times"  # periods that may still gain acquisitions
#: Attribute of ``optical``: its band names, as the ``band`` coordinate holds them.
BAND_NAMES_ATTR = "band_names"

#: Names beside and inside a store.
ZARR_SUFFIX = ".zarr"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
SIDECAR_DIR = "_sar2opt"  # sar2opt's own files (an empty Zarr group: see the docstring)
LEDGER_FILE = f"{SIDECAR_DIR}/ledger.txt"
LEGACY_LEDGER_FILE = "_sar2opt_ledger.txt"  # the ledger's place in stores written before
STAC_DIR = "stac"
#: Group metadata that makes a folder of non-array files a valid (empty) Zarr v3 group.
_EMPTY_GROUP = {"zarr_format": 3, "node_type": "group", "attributes": {}}


class MosaicExistsError(Sar2OptError, FileExistsError):
    """The output is already there (or holds another run) and ``overwrite`` was not asked for."""


class StoreMissingError(Sar2OptError):
    """The store to append to does not exist (or is an unfinished infer_region run)."""


# ---------------------------------------------------------------------------------------------
# paths


def partial_path(out: str | Path) -> Path:
    """Where a run writes before ``finish`` renames it to ``out``."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def lock_path(out: str | Path) -> Path:
    """The writers' lock file of ``out``."""
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def as_zarr_group(folder: str | Path, description: str) -> Path:
    """Make ``folder`` (created if missing) an empty Zarr group, so a reader listing the store
    meets a group there rather than an unknown object; its ``zarr.json`` is written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "zarr.json"
    if not meta.is_file():
        tmp = folder / f".zarr.json.tmp-{os.getpid()}"
        doc = {**_EMPTY_GROUP, "attributes": {"description": description}}
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, meta)
    return folder


def ensure_sidecar(store: str | Path) -> Path:
    """The store's ``_sar2opt/`` folder (the ledger's), as a Zarr group; a ledger where
    stores written before kept it (``LEGACY_LEDGER_FILE``) is moved into it, so a run or
    monitor started by this version resumes one started by the previous."""
    store = Path(store)
    d = as_zarr_group(store / SIDECAR_DIR, "sar2opt bookkeeping (block ledger), not data")
    legacy = store / LEGACY_LEDGER_FILE
    if legacy.is_file() and not (store / LEDGER_FILE).exists():
        os.replace(legacy, store / LEDGER_FILE)
    return d


def zone_paths(root: str | Path, zones: Sequence[str]) -> list[Path]:
    """The store of each zone under ``root``: ``root`` itself for one zone, else
    ``root/<zone>.zarr``."""
    root = Path(root)
    return [root] if len(zones) == 1 else [root / f"{z}{ZARR_SUFFIX}" for z in zones]


def zone_stores(root: str | Path, migrate: bool = True) -> list[Path]:
    """The finished store(s) at ``root``: itself, or the ``<zone>.zarr`` inside a folder;
    with ``migrate`` (writers: monitor) each gets this version's layout (``ensure_sidecar``),
    without (readers: export) nothing is written.

    Appending needs a finished mosaic: a missing one must first be made by
    ``jobs/infer_region.py`` (which fixes the grid, the settings and the first dates).
    """
    root = Path(root)
    if (root / "zarr.json").is_file():
        zones = [root]
    else:
        zones = sorted(p for p in root.glob(f"*{ZARR_SUFFIX}") if (p / "zarr.json").is_file())
    if zones:
        for z in zones if migrate else ():
            ensure_sidecar(z)
        return zones
    partial = partial_path(root)
    if partial.exists():
        raise StoreMissingError(
            f"{root} is not finished ({partial} holds a partial run): run jobs/infer_region.py "
            "again with the same arguments to finish it, then monitor"
        )
    raise StoreMissingError(
        f"no mosaic store at {root}: create it first with jobs/infer_region.py "
        "(--aoi, --start, --end, --checkpoint, --out), then monitor appends to it"
    )


def check_output(out: str | Path, overwrite: bool = False) -> Path:
    """Fail early (before hours of inference) if ``out`` exists and may not be replaced."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise MosaicExistsError(f"output {out} exists; pass --overwrite to replace it")
    return out


def finish(out: str | Path) -> Path:
    """Rename the run's ``<out>.partial`` to ``out``, atomically: a previous ``out`` is
    replaced only now that the new one is complete, and put back if the rename fails."""
    out = Path(out)
    work = partial_path(out)
    if not out.exists():
        os.replace(work, out)
        return out
    old = out.with_name(out.name + f".old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(work, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# resume


def fingerprint(settings: Mapping) -> str:
    """Short hash of a run's settings (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:16]


def run_attrs(settings: Mapping) -> dict:
    """The attributes that record a run's settings in its store (``same_run`` reads them)."""
    return {SETTINGS_ATTR: dict(settings), FINGERPRINT_ATTR: fingerprint(settings)}


def same_run(attrs: Mapping, settings: Mapping, times: Sequence[str] | None = None) -> bool:
    """Whether a store with ``attrs`` was made with ``settings`` (and, when given, has
    exactly the time steps ``times``): then it may be resumed or appended to."""
    if attrs.get(FINGERPRINT_ATTR) != fingerprint(settings):
        return False
    return times is None or list(attrs.get(TIMES_ATTR) or []) == list(times)


def settings_diff(attrs: Mapping, settings: Mapping) -> list[str]:
    """Keys of ``settings`` whose values differ from the store's (for an error that says
    what); empty when the store does not record them."""
    old = attrs.get(SETTINGS_ATTR)
    if not isinstance(old, Mapping):
        return []
    return sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))


def open_work(
    out: str | Path,
    zones: Sequence[str],
    settings: Sequence[Mapping],
    times: Sequence[str],
    overwrite: bool = False,
) -> list[Path]:
    """The store of each zone inside ``<out>.partial``. A partial run there with the same
    settings and dates is kept, to be resumed; another is removed with ``overwrite`` and
    refused without."""
    work = partial_path(out)
    stores = zone_paths(work, zones)
    other = [
        s
        for s, st in zip(stores, settings, strict=True)
        if s.exists() and not same_run(read_attrs(s), st, times)
    ]
    if other and not overwrite:
        raise MosaicExistsError(
            f"{work} holds a partial run with other settings or dates; "
            "pass --overwrite to start again"
        )
    if other:
        shutil.rmtree(work)
    for s in stores:
        if s.exists():  # resumed: its ledger where this version keeps it
            ensure_sidecar(s)
    return stores


# ---------------------------------------------------------------------------------------------
# the arrays


def time_coords(times: Sequence[str]) -> np.ndarray:
    """ISO times (any offset, 'Z') -> naive UTC datetime64[ns], as the cube stores them."""
    import pandas as pd

    idx = pd.to_datetime(list(times), utc=True, format="ISO8601")
    return idx.tz_convert(None).to_numpy(dtype="datetime64[ns]")


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
        "time": time_coords(times),
        "band": np.array([str(b) for b in bands], dtype=object),
        "y": grid.ys(),
        "x": grid.xs(),
    }
    ds = xr.Dataset(
        {
            OPTICAL_VAR: (
                ("time", "band", "y", "x"),
                da.full((nt, nb, h, w), np.nan, dtype="float32", chunks=(1, nb, bh, sw)),
                {
                    "long_name": "surface reflectance (composite or prediction)",
                    "units": "1",
                    # also here for readers without the v3 ``string`` type (tensorstore)
                    BAND_NAMES_ATTR: [str(b) for b in bands],
                },
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
                    "long_name": UNCERTAINTY_LONG_NAME,
                    "units": "1",
                },
            ),
            OBS_TIME_VAR: (
                ("time", "y", "x"),
                da.full((nt, h, w), OBS_TIME_FILL, dtype="int32", chunks=(1, bh, sw)),
                {
                    "long_name": "time of the observation the pixel shows (S1 or S2 pass)",
                    "units": OBS_TIME_UNITS,
                    "calendar": "proleptic_gregorian",
                },
            ),
        },
        coords=coords,
    )
    ds = ds.rio.write_crs(f"EPSG:{grid.epsg}").rio.write_transform(grid.transform)
    for name in (OPTICAL_VAR, UNCERTAINTY_VAR):
        ds[name] = ds[name].rio.write_nodata(np.nan, encoded=False)
    ds[OBS_TIME_VAR].encoding["_FillValue"] = OBS_TIME_FILL  # CF: xarray reads NaT
    ds[OBS_TIME_VAR].encoding["fill_value"] = OBS_TIME_FILL  # Zarr: unwritten chunks
    # ``source`` keeps no _FillValue attr: xarray would decode its 0 (no data) to NaN and the
    # flags to float; unwritten chunks still read 0 (the array's fill value).
    for name in VARS:
        ds[name].encoding["coordinates"] = "spatial_ref"  # keep .rio.crs on plain open_zarr
        lead = (1, nb) if name == OPTICAL_VAR else (1,)
        ds[name].encoding["chunks"] = (*lead, bh, bw)
        if shard_blocks > 1:
            ds[name].encoding["shards"] = (*lead, bh, bw * shard_blocks)
    ds.attrs.update(dict(attrs or {}))
    ds.attrs[GRID_ATTR] = grid.to_dict()
    ds.attrs[TIMES_ATTR] = [str(t) for t in times]
    ds.attrs[BLOCK_PX_ATTR] = int(block_px)
    ds.attrs[SHARD_BLOCKS_ATTR] = int(shard_blocks)
    return ds


def _to_zarr(ds: xr.Dataset, path: Path, **kw) -> None:
    """Metadata (and coordinates) only; no consolidated metadata (not in the v3 spec)."""
    ds.to_zarr(path, zarr_format=3, compute=False, consolidated=False, **kw)


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
    ensure_sidecar(path)
    return path


def shard_blocks(path: str | Path) -> int:
    """Blocks of a block row per shard of the store (1 for stores written before sharding)."""
    return int(read_attrs(path).get(SHARD_BLOCKS_ATTR, 1))


def read_attrs(path: str | Path) -> dict:
    """The store's attributes (from its root ``zarr.json``, no array opened)."""
    meta = json.loads((Path(path) / "zarr.json").read_text())
    return dict(meta.get("attributes", {}))


def update_attrs(path: str | Path, attrs: Mapping) -> None:
    """Merge ``attrs`` into the store's attributes. The group is opened without consolidated
    metadata, so rewriting it drops what a store written before still had (which would
    otherwise go stale: readers trust it over the arrays' own metadata)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g.attrs.update(dict(attrs))
    _group.cache_clear()


def time_length(path: str | Path) -> int:
    """Length of the store's ``time`` array (may exceed ``TIMES_ATTR`` after a killed append)."""
    meta = json.loads((Path(path) / "time" / "zarr.json").read_text())
    return int(meta["shape"][0])


def truncate_times(path: str | Path, n: int) -> None:
    """Shrink every array along ``time`` to ``n`` steps (drops their chunks beyond ``n``)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
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
    if time_length(path) > len(old[TIMES_ATTR]):
        truncate_times(path, len(old[TIMES_ATTR]))
    grid = GridSpec.from_dict(old[GRID_ATTR])
    bands = [str(b) for b in xr.open_zarr(path, consolidated=False)["band"].values]
    k = int(old.get(SHARD_BLOCKS_ATTR, 1))  # the store's layout: the new steps get the same
    ds = store_dataset(grid, times, bands, None, int(old[BLOCK_PX_ATTR]), k)
    ds = ds.drop_vars(["band", "y", "x", "spatial_ref"])
    # a store made before a variable existed (obs_time) grows without it
    ds = ds.drop_vars([v for v in ds.data_vars if not (Path(path) / v / "zarr.json").exists()])
    ds.attrs = old  # to_zarr rewrites the group's attrs: keep them (times_iso still the old)
    for name in ds.data_vars:  # the store has them; xarray refuses to write _FillValue twice
        ds[name].attrs = {}
    _to_zarr(ds, Path(path), append_dim="time")
    n0 = len(old[TIMES_ATTR])
    update_attrs(path, {**dict(attrs or {}), TIMES_ATTR: [*old[TIMES_ATTR], *map(str, times)]})
    return list(range(n0, n0 + len(times)))


@lru_cache(maxsize=4)
def _group(path: str):
    import zarr

    return zarr.open_group(path, mode="r+", use_consolidated=False)


def has_var(path: str, name: str) -> bool:
    """Whether the store has variable ``name`` (stores made before ``obs_time`` lack it).
    Not cached: one stat per block write, and a store re-created in the same process under
    the same path must not get an earlier store's answer."""
    return (Path(path) / name / "zarr.json").exists()


def write_block(
    path: str | Path,
    t: int,
    core: tuple[int, int, int, int],
    optical: np.ndarray,
    source: np.ndarray,
    uncertainty: np.ndarray,
    obs_time: np.ndarray | None = None,
) -> None:
    """Write one block (its whole chunks) of time step ``t``: optical (C, h, w), source,
    uncertainty and obs_time (h, w; ``OBS_TIME_UNITS``, None: not recorded), at the core
    window ``(row0, col0, row1, col1)``."""
    g = _group(str(path))
    r0, c0, r1, c1 = core
    g[OPTICAL_VAR][t, :, r0:r1, c0:c1] = np.asarray(optical, np.float32)
    g[SOURCE_VAR][t, r0:r1, c0:c1] = np.asarray(source, np.uint8)
    g[UNCERTAINTY_VAR][t, r0:r1, c0:c1] = np.asarray(uncertainty, np.float32)
    if obs_time is not None and has_var(str(path), OBS_TIME_VAR):
        g[OBS_TIME_VAR][t, r0:r1, c0:c1] = np.asarray(obs_time, np.int32)


def clear_objects(path: str | Path, t: int, cores: Sequence[tuple[int, int, int, int]]) -> int:
    """Remove the stored objects (chunk or shard files) of every variable that the blocks at
    ``cores`` of time step ``t`` are written into; how many there were.

    Why: zarrs writes an object in place, so a writer killed mid-write (the job SIGKILLed, an
    actor's node lost and its task retried) leaves a torn file, and a later write of only part
    of that shard (a shard at the AOI's edge) reads it back and fails ("incomplete frame").
    A writer owns every block of its shards (``run.block_tasks(shard_blocks=...)`` reopens a
    whole shard when one of its blocks is missing), so removing them first loses nothing.
    """
    g = _group(str(path))
    n = 0
    for name in VARS:
        if not has_var(str(path), name):
            continue
        arr = g[name]
        obj = arr.shards or arr.chunks  # the stored object's shape
        seen = set()
        for r0, c0, _, _ in cores:
            lead = (t, 0) if arr.ndim == 4 else (t,)
            coords = (*lead, r0 // obj[-2], c0 // obj[-1])
            if coords in seen:
                continue
            seen.add(coords)
            f = Path(path) / name / arr.metadata.encode_chunk_key(coords)
            if f.exists():
                f.unlink()
                n += 1
    return n


def write_blocks(
    path: str | Path,
    blocks: Sequence[tuple],
) -> None:
    """Write ``(t, core, optical, source, uncertainty[, obs_time])`` blocks (as
    :func:`write_block`).

    Blocks of one time step and block row that touch left to right are written as one window:
    one zarr call per array instead of one per block (each call costs ~2 ms of zarr's async
    machinery, as much as compressing the block). Callers pass whole shards' worth of blocks
    (a strip), so no other writer touches them; what an earlier, killed writer may have left
    in those shards is removed first (``clear_objects``).
    """
    todo = sorted(blocks, key=lambda b: (b[0], b[1][0], b[1][2], b[1][1]))
    for t in sorted({b[0] for b in todo}):
        clear_objects(path, t, [b[1] for b in todo if b[0] == t])
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
            np.concatenate([np.asarray(b[5], np.int32) for b in run], axis=-1)
            if all(len(b) > 5 and b[5] is not None for b in run)
            else None,
        )
        i = j


def describe(path: str | Path) -> str:
    """Dims of the image and its valid fraction; the latter only for stores small enough to
    scan in about a second (a 40 km scene took 6 s to re-read: longer than the job's start)."""
    import xarray as xr

    da = xr.open_zarr(path, consolidated=False)[OPTICAL_VAR]
    text = f"dims {dict(da.sizes)}"
    if da.size <= 2e7:
        text += f"  valid {float(np.isfinite(da.values).mean()):.1%}"
    return text
