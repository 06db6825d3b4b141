"""Tiled, resumable cube builds: per-zone Zarr stores written tile by tile, on Ray or serially.

1. Plan (``sar2opt.cube.tiles`` on ``sar2opt.zones``): zones, grids, tiles, from the AOI alone.
2. Search once for the whole AOI (``search_inputs``); per zone, the S1 passes that meet it
   are its time axis, fixed before any pixel is written, so every tile shares it (a tile that
   no frame of a pass covers is NaN there).
3. Create each zone's store: metadata, coordinates and attrs, an all-NaN ``cube``.
4. One ``TileTask`` per tile (a frozen dataclass naming its window and the indices of the
   items that meet it) reads its pixels through the windowed COG reader (``window_load``:
   no dask graph per tile), cleans and pairs them (``build.compose``: what ``build_cube``
   does on the whole grid) and writes its own chunks, then a marker
   ``_tiles/<row>_<col>`` (after its data). A re-run skips marked tiles.
5. When all tiles of a zone are marked, its attrs say ``build.status = complete``.

Layout: an AOI in one zone writes one store at ``out`` (what ``build_cube`` always wrote); an
AOI across zones writes a directory ``out`` holding ``<zone>.zarr`` per zone (``21S.zarr``,
named by ``sar2opt.zones.zone_name``) and ``zones.json``: the zones have different CRSs and
coordinates, so each is a complete cube on its own that ``xr.open_zarr`` (training,
evaluation) reads unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from sar2opt.config import CatalogSpec, CubeSpec, config_to_dict
from sar2opt.cube.build import (
    CubeInputs,
    CubeQuery,
    Pixels,
    compose,
    cube_attrs,
    cube_bands,
    cube_dataarray,
    inputs_from_items,
    load_pixels,
    search_inputs,
)
from sar2opt.cube.tiles import ZonePlan, plan_zones
from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.zones import Window

TILE_DIR = "_tiles"
ZONES_FILE = "zones.json"
INCOMPLETE, COMPLETE = "incomplete", "complete"
#: Tiles read through the windowed COG reader (no dask graph per tile); "stackstac" reads
#: the same values the way ``build_cube`` does (kept for comparison, ``bench_cube.py``).
DEFAULT_READER = "windows"


class OutputExistsError(Sar2OptError):
    """The output exists and is complete, or belongs to another request."""


@dataclass(frozen=True)
class TileTask:
    """One unit of work: a tile of a zone's store and the items that meet it.

    ``s1`` holds, per time step, indices into that step's group of the zone's inputs; ``s2``
    and ``dem`` index the zone's S2 and DEM items. The items themselves travel once per zone.
    """

    store: str
    zone: str
    grid: GridSpec
    row: int
    col: int
    window: Window
    read: Window
    s1: tuple[tuple[int, ...], ...]
    s2: tuple[int, ...]
    dem: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.row}_{self.col}"


@dataclass(frozen=True)
class ZoneBuild:
    """A zone's plan, inputs and store: what the driver holds while its tiles run."""

    plan: ZonePlan
    inputs: CubeInputs
    store: Path
    fingerprint: str


# ------------------------------------------------------------------------------ item geometry


def item_geometry(item: dict) -> BaseGeometry:
    """An item's lon/lat footprint: its geometry, else its bbox (split at 180° if W > E)."""
    if item.get("geometry"):
        return shape(item["geometry"])
    bbox = item.get("bbox")
    if not bbox:
        return box(-180.0, -90.0, 180.0, 90.0)
    w, s, e, n = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else tuple(bbox)
    if w <= e:
        return box(w, s, e, n)
    return box(w, s, 180.0, n).union(box(-180.0, s, e, n))


class ItemIndex:
    """Which of ``items`` meet a lon/lat geometry, through an STR-tree (many tiles, many items)."""

    def __init__(self, items: Sequence[dict]) -> None:
        from shapely import STRtree

        self.geoms = [item_geometry(it) for it in items]
        self.tree = STRtree(self.geoms) if self.geoms else None

    def meeting(self, geom: BaseGeometry) -> tuple[int, ...]:
        if self.tree is None:
            return ()
        return tuple(sorted(int(i) for i in self.tree.query(geom, predicate="intersects")))


def zone_inputs(inputs: CubeInputs, aoi_part: BaseGeometry) -> CubeInputs:
    """The inputs of one zone: items meeting its part of the AOI; passes seen there only."""
    keep = ItemIndex(inputs.s2_items).meeting(aoi_part)
    dem = ItemIndex(inputs.dem_items).meeting(aoi_part)
    s1 = [it for g in inputs.s1_groups for it in g]
    s1 = [s1[i] for i in ItemIndex(s1).meeting(aoi_part)]
    return inputs_from_items(
        s1, [inputs.s2_items[i] for i in keep], [inputs.dem_items[i] for i in dem]
    )


def tile_tasks(build: ZoneBuild, halo_px: int) -> list[TileTask]:
    """Every planned tile of a zone with the items meeting its read window (lon/lat bbox)."""
    plan, inputs = build.plan, build.inputs
    s1_index = [ItemIndex(g) for g in inputs.s1_groups]
    s2_index, dem_index = ItemIndex(inputs.s2_items), ItemIndex(inputs.dem_items)
    tasks = []
    for row, col in plan.tiles:
        r0, c0, r1, c1 = plan.lattice.core(row, col)
        read = plan.lattice.halo(row, col, halo_px)
        footprint = box(*lonlat_bounds(plan.zone.grid.subgrid(*read)))
        tasks.append(
            TileTask(
                store=str(build.store),
                zone=plan.zone.name,
                grid=plan.zone.grid,
                row=row,
                col=col,
                window=(r0, c0, r1 - r0, c1 - c0),
                read=read,
                s1=tuple(ix.meeting(footprint) for ix in s1_index),
                s2=s2_index.meeting(footprint),
                dem=dem_index.meeting(footprint),
            )
        )
    return tasks


def task_inputs(task: TileTask, inputs: CubeInputs) -> CubeInputs:
    """The zone's inputs cut to a tile's items; the time axis is kept whole."""
    return CubeInputs(
        times=inputs.times,
        s1_groups=tuple(
            tuple(g[i] for i in idx) for g, idx in zip(inputs.s1_groups, task.s1, strict=True)
        ),
        s2_items=tuple(inputs.s2_items[i] for i in task.s2),
        dem_items=tuple(inputs.dem_items[i] for i in task.dem),
    )


# ------------------------------------------------------------------------------------ stores


def fingerprint(
    plan: ZonePlan, inputs: CubeInputs, query: CubeQuery, catalog: CatalogSpec, spec: CubeSpec
) -> str:
    """What makes two builds of a store the same: grid, tiling, bands, items, settings.

    The catalog URL is left out: the same items served from another port are the same data.
    """
    doc = {
        "grid": plan.zone.grid.to_dict(),
        "tiles": [list(t) for t in plan.tiles],
        "times": list(inputs.times),
        "s1": [[it["id"] for it in g] for g in inputs.s1_groups],
        "s2": [it["id"] for it in inputs.s2_items],
        "dem": [it["id"] for it in inputs.dem_items],
        "query": [list(query.bbox_lonlat), query.start, query.end],
        "catalog": config_to_dict(replace(catalog, stac_url="", timeout_s=0.0)),
        "spec": config_to_dict(replace(spec, cpus_per_tile=0.0)),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def read_build_attr(store: Path) -> dict | None:
    """The ``build`` attr of a store; ``None`` when it has none (a store from ``build_cube``,
    complete by construction). Raises ``OutputExistsError`` if ``store`` is not a Zarr store."""
    meta = store / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        raise OutputExistsError(
            f"output {store} exists and is not a cube store; pass --overwrite to replace it"
        ) from None
    return attrs.get("build") if "build" in attrs else None


def store_status(store: Path) -> str:
    """``absent``, ``complete`` or ``incomplete``."""
    if not store.exists():
        return "absent"
    build = read_build_attr(store)
    return COMPLETE if build is None or build.get("status") == COMPLETE else INCOMPLETE


def create_store(build: ZoneBuild, attrs: dict, *, catalog: CatalogSpec, spec: CubeSpec) -> None:
    """Write a zone's metadata, coordinates and attrs; ``cube`` stays unwritten (NaN).

    Written into a temporary sibling and renamed, so a crash here leaves nothing behind.
    """
    import dask.array as da

    grid, bands = build.plan.zone.grid, cube_bands(catalog, spec)
    nt, nb = len(build.inputs.times), len(bands)
    chunks = (1, nb, spec.chunk_px, spec.chunk_px)
    write_chunks = (1, nb, spec.tile_px, spec.tile_px) if spec.shard_tiles else chunks
    empty = da.full((nt, nb, *grid.shape), np.nan, dtype="float32", chunks=write_chunks)
    ds = cube_dataarray(empty, grid, build.inputs.time_coord(), bands).to_dataset(name="cube")
    ds.attrs.update(attrs)
    encoding = {"cube": {"chunks": chunks}}
    if spec.shard_tiles:
        encoding["cube"]["shards"] = write_chunks
    tmp = build.store.with_name(f".{build.store.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(
                tmp, mode="w", zarr_format=3, consolidated=True, compute=False, encoding=encoding
            )
        (tmp / TILE_DIR).mkdir()
        os.replace(tmp, build.store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def done_tiles(store: str | Path) -> set[str]:
    """Keys (``row_col``) of the tiles whose marker exists: their data is fully written."""
    d = Path(store) / TILE_DIR
    return {p.name for p in d.iterdir() if not p.name.startswith(".")} if d.is_dir() else set()


def write_tile(task: TileTask, data: np.ndarray) -> None:
    """Write a tile's (time, band, h, w) block into its own chunks, then its marker."""
    import zarr

    r0, c0, h, w = task.window
    arr = zarr.open_array(str(Path(task.store) / "cube"), mode="r+")
    arr[:, :, r0 : r0 + h, c0 : c0 + w] = data
    marker = Path(task.store) / TILE_DIR / task.key
    tmp = marker.with_name(f".{task.key}.tmp")
    tmp.write_text(json.dumps({"window": list(task.window)}))
    os.replace(tmp, marker)


def finalise_store(store: Path) -> None:
    """Mark a store complete (once every tile has its marker), drop the markers, consolidate."""
    import zarr

    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    build = dict(group.attrs["build"])
    build["status"] = COMPLETE
    group.attrs["build"] = build
    shutil.rmtree(store / TILE_DIR, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(store))


# ------------------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class TileResult:
    zone: str
    key: str
    nbytes: int
    seconds: float


def load_tile(
    task: TileTask, inputs: CubeInputs, catalog: CatalogSpec, spec: CubeSpec, reader: str
) -> Pixels:
    """Read one tile's inputs (with its halo): the I/O half of a tile."""
    return load_pixels(
        task.grid.subgrid(*task.read),
        task_inputs(task, inputs),
        catalog=catalog,
        spec=spec,
        reader=reader,
    )


def finish_tile(
    task: TileTask, inputs: CubeInputs, pixels: Pixels, catalog: CatalogSpec, spec: CubeSpec
) -> int:
    """Clean and pair a loaded tile, crop its halo and write it; returns the bytes written."""
    data = compose(pixels, task_inputs(task, inputs), catalog=catalog, spec=spec, log=None)
    r0, c0, h, w = task.window
    dr, dc = r0 - task.read[0], c0 - task.read[1]
    block = np.ascontiguousarray(data[:, :, dr : dr + h, dc : dc + w])
    write_tile(task, block)
    return block.nbytes


def run_tile(
    task: TileTask,
    inputs: CubeInputs,
    catalog: CatalogSpec,
    spec: CubeSpec,
    reader: str = DEFAULT_READER,
    pixels: Future | None = None,
) -> TileResult:
    """Load, clean and pair one tile (with its halo), crop it and write it: one unit of work.

    ``pixels``: the tile's inputs being read already (a future of ``load_tile``: the serial
    runner reads the next tile while this one is cleaned and written)."""
    t0 = time.perf_counter()
    loaded = pixels.result() if pixels is not None else None
    if loaded is None:
        loaded = load_tile(task, inputs, catalog, spec, reader)
    nbytes = finish_tile(task, inputs, loaded, catalog, spec)
    return TileResult(task.zone, task.key, nbytes, time.perf_counter() - t0)


class Progress:
    """``tiles done/total`` lines: every tile for small builds, else every 1 % or 10 s."""

    def __init__(self, total: int, done: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.log = total, done, log
        self.step = max(1, total // 100) if total > 200 else 1
        self.t0 = self.last = time.perf_counter()
        self.nbytes = 0

    def tick(self, r: TileResult) -> None:
        self.done += 1
        self.nbytes += r.nbytes
        now = time.perf_counter()
        if self.done % self.step == 0 or self.done == self.total or now - self.last > 10:
            self.last = now
            mbs = self.nbytes / 1e6 / max(now - self.t0, 1e-9)
            self.log(
                f"tiles {self.done}/{self.total} done ({r.zone} {r.key}: {r.seconds:.1f} s; "
                f"{mbs:.1f} MB/s written)"
            )


def run_serial(
    tasks: Sequence[TileTask],
    inputs: dict[str, CubeInputs],
    catalog: CatalogSpec,
    spec: CubeSpec,
    progress: Progress,
    reader: str = DEFAULT_READER,
) -> None:
    """Tiles in order, in this process; the next tile is read in a thread while this one is
    cleaned, paired and written (GDAL's decoding and Zarr's compression release the GIL)."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-read") as pool:

        def read_ahead(t: TileTask) -> Future:
            return pool.submit(load_tile, t, inputs[t.zone], catalog, spec, reader)

        ahead = read_ahead(tasks[0])
        for i, task in enumerate(tasks):
            current = ahead
            ahead = read_ahead(tasks[i + 1]) if i + 1 < len(tasks) else None
            try:
                progress.tick(run_tile(task, inputs[task.zone], catalog, spec, reader, current))
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                raise
            del current


def run_ray(
    tasks: Sequence[TileTask],
    inputs: dict[str, CubeInputs],
    catalog: CatalogSpec,
    spec: CubeSpec,
    progress: Progress,
    reader: str = DEFAULT_READER,
) -> None:
    """Ray tasks of ``cpus_per_tile`` CPUs each; zone inputs go to the object store once;
    at most two tasks per schedulable slot are in flight so the driver stays small."""
    import ray

    remote = ray.remote(num_cpus=spec.cpus_per_tile, max_retries=2)(run_tile)
    refs = {zone: ray.put(inp) for zone, inp in inputs.items()}
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    limit = max(2, int(2 * cpus / spec.cpus_per_tile))
    pending: list = []
    queue = list(tasks)
    while queue or pending:
        while queue and len(pending) < limit:
            t = queue.pop(0)
            pending.append(remote.remote(t, refs[t.zone], catalog, spec, reader))
        ready, pending = ray.wait(pending, num_returns=1)
        progress.tick(ray.get(ready[0]))


def ray_is_initialized() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()


# ------------------------------------------------------------------------------------ driver


@dataclass(frozen=True)
class BuildResult:
    """Where a build wrote, and what it did."""

    out: Path
    stores: tuple[Path, ...]
    tiles_total: int
    tiles_run: int
    multi_zone: bool


def output_status(out: Path) -> str:
    """``absent``, ``complete`` or ``incomplete`` for a single store or a multi-zone directory."""
    if not out.exists():
        return "absent"
    if (out / "zarr.json").exists():
        return store_status(out)
    index = out / ZONES_FILE
    if not index.is_file():
        raise OutputExistsError(
            f"output {out} exists and is not a cube; pass --overwrite to replace it"
        )
    zones = json.loads(index.read_text())["zones"]
    states = {store_status(out / z) for z in zones}
    return COMPLETE if states == {COMPLETE} else INCOMPLETE


def check_output(out: str | Path, overwrite: bool) -> str:
    """Refuse a complete output unless ``overwrite``; an incomplete one will be resumed."""
    out = Path(out)
    status = output_status(out)
    if status == COMPLETE and not overwrite:
        raise OutputExistsError(f"output {out} exists; pass --overwrite to replace it")
    return status


def build_tiled(
    aoi: BaseGeometry,
    start: str,
    end: str,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    out: str | Path,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    reader: str = DEFAULT_READER,
) -> BuildResult:
    """Build (or resume) the cube of ``aoi`` into ``out``, tile by tile.

    Tiles run as Ray tasks when Ray is initialised, else one after another in this process.
    ``reader`` (``build.READERS``) is how tiles read pixels; both give the same cube.
    An incomplete ``out`` from the same request is resumed (marked tiles are skipped); one
    from another request, or a complete one, is refused unless ``overwrite``.
    """
    out = Path(out)
    status = check_output(out, overwrite)
    plans = plan_zones(aoi, spec)
    multi = len(plans) > 1
    query = CubeQuery(tuple(round(v, 6) for v in aoi.bounds), start, end)
    inputs = search_inputs(aoi, start, end, catalog=catalog, spec=spec)
    n_s1 = sum(len(g) for g in inputs.s1_groups)
    log(
        f"found {len(inputs.times)} S1 acquisitions ({n_s1} items), "
        f"{len(inputs.s2_items)} S2 items, {len(plans)} zone(s)"
    )
    builds = []
    for plan in plans:
        zin = zone_inputs(inputs, plan.zone.aoi) if multi else inputs
        if not zin.times:
            log(f"{plan.zone.name}: no Sentinel-1 pass meets this zone's part; skipped")
            continue
        store = out / f"{plan.zone.name}.zarr" if multi else out
        fp = fingerprint(plan, zin, query, catalog, spec)
        builds.append(ZoneBuild(plan, zin, store, fp))

    if status != "absent" and overwrite:
        shutil.rmtree(out)
        status = "absent"
    if status == INCOMPLETE:
        _check_resumable(out, builds, multi)
    if multi:
        out.mkdir(parents=True, exist_ok=True)
        index = {"zones": [b.store.name for b in builds], "query": list(query.bbox_lonlat)}
        (out / ZONES_FILE).write_text(json.dumps(index, indent=1))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)

    tasks: list[TileTask] = []
    total = 0
    for b in builds:
        g = b.plan.zone.grid
        if not b.store.exists():
            attrs = cube_attrs(g, b.inputs, query, catalog=catalog, spec=spec)
            attrs["build"] = {
                "status": INCOMPLETE,
                "fingerprint": b.fingerprint,
                "tile_px": spec.tile_px,
                "tiles": len(b.plan.tiles),
            }
            create_store(b, attrs, catalog=catalog, spec=spec)
        elif store_status(b.store) == COMPLETE:
            total += len(b.plan.tiles)
            continue
        done = done_tiles(b.store)
        zone_tasks = tile_tasks(b, spec.cloud_dilate_px)
        todo = [t for t in zone_tasks if t.key not in done]
        log(
            f"{b.plan.zone.name}: grid {g.height} x {g.width} px (EPSG:{g.epsg}), "
            f"{len(b.inputs.times)} time steps, {len(zone_tasks)} tiles"
            + (f", {len(zone_tasks) - len(todo)} already complete (resuming)" if done else "")
        )
        total += len(zone_tasks)
        tasks += todo

    progress = Progress(total, total - len(tasks), log)
    zone_in = {b.plan.zone.name: b.inputs for b in builds}
    runner = run_ray if ray_is_initialized() else run_serial
    runner(tasks, zone_in, catalog, spec, progress, reader)

    for b in builds:
        if store_status(b.store) != COMPLETE:
            missing = {f"{r}_{c}" for r, c in b.plan.tiles} - done_tiles(b.store)
            if missing:  # pragma: no cover - every task above wrote its marker or raised
                raise RuntimeError(f"{b.store}: tiles {sorted(missing)[:5]} were not written")
            finalise_store(b.store)
    return BuildResult(out, tuple(b.store for b in builds), total, len(tasks), multi)


def _check_resumable(out: Path, builds: Sequence[ZoneBuild], multi: bool) -> None:
    """An incomplete output is resumed only if it was started by this very request."""
    stores = {b.store for b in builds}
    if multi:
        listed = {out / z for z in json.loads((out / ZONES_FILE).read_text())["zones"]}
        if listed != stores:
            raise OutputExistsError(
                f"output {out} is an incomplete build of other zones; pass --overwrite to restart"
            )
    for b in builds:
        if not b.store.exists():
            continue
        build = read_build_attr(b.store) or {}
        if build.get("fingerprint") != b.fingerprint:
            raise OutputExistsError(
                f"output {b.store} is an incomplete build of another request (AOI, dates, "
                "config or catalog items differ); pass --overwrite to restart it"
            )
