"""Fill a block store: read SAR strips -> hypotheses -> composite + write, on an actor pool.

The unit of work is a ``Strip``: up to ``read_blocks`` neighbouring blocks of a block row,
read with one windowed read per asset (``FillJob.sar``, and ``FillJob.aux`` for the prior
and DEM of SD/SO/SOD models), predicted ``batch_size`` blocks at a
time (the predictor), cropped to their cores, composited with clear S2 and written
(``compose_block``, ``store.write_blocks``): ``process_strip``. On Ray, a Ray Data pool of
``StripWorker`` actors (predictor made once per actor) runs several strips per actor at once
in threads, so reads and writes overlap the forward pass and no array crosses the object
store; strips become dicts only there (``Strip.to_row``/``from_row``), and the driver only
appends the finished keys to the ledger. ``run_local`` runs the same ``process_strip``
in-process (tests, tiny AOIs). A scene-fit model's strip is read one block wider on every
side, so each window's reference can blend its neighbours' fits (``fit_lattice``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sar2opt.config import CubeSpec
from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.infer.composite import (
    SOURCE_NODATA,
    SOURCE_S2,
    evidence_rank,
    nearest_clear_pick,
    synthesis_source,
)
from sar2opt.infer.ledger import BlockKey, DoneBlocks, TileLedger
from sar2opt.infer.periods import OBS_NONE, BestEvidence, edge_weight, obs_seconds
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.store import write_blocks
from sar2opt.profiles import CollectionProfile

#: When this module was imported (epoch s): in an actor, after its Ray worker started.
IMPORTED_AT = time.time()

#: (row, col, height, width) of a window on the lattice's grid.
Window = tuple[int, int, int, int]
#: A predictor: ``{"sar": (B, Cs, H, W)[, "prior": (B, Co, H, W)][, "dem": (B, 1, H, W)]}``
#: -> ``{"pred": (B, Co, H, W), "spread": (B, H, W)[, "uncertainty": (B, H, W)]}``
#: (``predictor.TilePredictor``; ``uncertainty``, the calibrated spread, is what is written).
Predict = Callable[[dict], dict]


#: Width of the ramp on the clear side of a cloud-mask edge where real S2 passes into the
#: synthesis (``CompositeSpec.feather_px``): the step across the edge spread over ~8 px.
FEATHER_PX = 8


@dataclass(frozen=True)
class CompositeSpec:
    """How real S2 pixels replace the synthesis (``max_dt_days`` <= 0 turns it off).

    ``rule``: the cube's cloud and shadow test and its dilation (``cube.build.clear_mask``
    with the ``CubeSpec`` thresholds), so that what the cube calls clear is what the mosaic
    keeps as real S2. ``feather_px``: on the clear side of a cloud-mask edge, within about
    that many pixels, the real S2 pixel is blended with the synthesis (``periods.edge_weight``
    of the clear pixels: the S2 share rises from ~0 at the edge to 1), so a biased synthesis
    does not leave a hard step around every cloud; 0 cuts hard. Clear pixels farther from
    the mask are the real S2 pixel, bit for bit."""

    max_dt_days: float = 0.0
    opt_bands: tuple[str, ...] = ()
    rule: CubeSpec = CubeSpec()
    profile: CollectionProfile | None = None  # the S2 collection's (re-keys, signs, scales)
    feather_px: int = FEATHER_PX

    def __post_init__(self) -> None:
        if self.feather_px < 0 or self.rule.cloud_dilate_px < 0:
            raise ValueError(
                f"feather_px and cloud_dilate_px must be >= 0, got {self.feather_px}, "
                f"{self.rule.cloud_dilate_px}"
            )


class SarSource(Protocol):
    """Where a fill reads its SAR: ``read.CatalogSar`` (the catalog's COGs) or a test's."""

    def read(self, t: int, window: Window) -> np.ndarray:
        """SAR (Cs, h, w) dB of time step ``t`` over ``window`` of the lattice's grid."""
        ...


class AuxSource(Protocol):
    """Where a fill reads the inputs besides SAR (``read.CatalogAux``, or a test's)."""

    keys: tuple[str, ...]  # the inputs it reads: of "cloudy", "prior", "dem"

    def read(self, t: int, window: Window) -> dict[str, np.ndarray]:
        """``{"prior": (Co, h, w) reflectance, "dem": (1, h, w) metres}`` (those the model
        reads) of time step ``t`` over ``window``, NaN where missing."""
        ...


@dataclass(frozen=True)
class FillJob:
    """What a fill does with each strip: read its SAR from ``sar`` (and, for SD/SO/SOD
    models, the prior and DEM from ``aux``), predict ``batch_size`` blocks at a time,
    composite with the clear S2 of ``s2_by_time`` (``composite``), write the cores of
    ``lattice``'s blocks to ``store``."""

    store: str
    lattice: BlockLattice
    sar: SarSource
    batch_size: int = 4
    out_bands: tuple[str, ...] = ()
    s2_by_time: tuple[tuple[dict, ...], ...] = ()
    composite: CompositeSpec | None = None
    #: What becomes of a strip's composed blocks: ``None`` writes them to ``store``
    #: (``write_strip``); a benchmark passes a no-op to time the driver alone.
    write: Callable[[FillJob, Strip, Sequence[tuple]], None] | None = None
    #: Per time step, the S1 acquisitions it folds (indices ``sar.read`` takes, nearest
    #: evidence wins: ``periods.BestEvidence``); empty: step ``t`` is acquisition ``t``.
    acquisitions: tuple[tuple[int, ...], ...] = ()
    #: When each acquisition was made, and each time step's reference instant
    #: (``periods.obs_seconds``); empty: unknown (``obs_time`` then records none).
    acquisition_seconds: tuple[int, ...] = ()
    reference_seconds: tuple[int, ...] = ()
    #: How far from the reference a clear S2 pixel may be (None: ``composite.max_dt_days``;
    #: a period mosaic's S2 items are those inside the period, so it passes infinity).
    s2_max_dt_days: float | None = None
    #: The inputs besides SAR of SD/SO/SOD models (prior, DEM), read per acquisition.
    aux: AuxSource | None = None
    #: A scene-fit model's reference is fitted per block window and blended between
    #: neighbouring blocks, its residual spread into the gaps (``fit_lattice``): each strip
    #: reads its inputs a block wider on every side (more where the spread reaches farther
    #: than half a block), and the predictor gets each window's reference and its fit (batch
    #: keys ``ref`` and ``ref_fit``: ``TilePredictor.reference_fields``).
    blend_reference: bool = False

    @property
    def reads_prior(self) -> bool:
        return self.aux is not None and "prior" in self.aux.keys

    @property
    def reads_cloudy(self) -> bool:
        return self.aux is not None and "cloudy" in self.aux.keys

    def acquisitions_of(self, t: int) -> tuple[int, ...]:
        return self.acquisitions[t] if self.acquisitions else (t,)

    def obs_seconds_of(self, a: int) -> int:
        return self.acquisition_seconds[a] if self.acquisition_seconds else OBS_NONE

    def ref_seconds(self, t: int) -> int:
        return self.reference_seconds[t] if self.reference_seconds else 0

    def s2_max_dt(self, t: int) -> float:
        if self.s2_max_dt_days is not None:
            return self.s2_max_dt_days
        return self.composite.max_dt_days if self.composite else 0.0


@dataclass(frozen=True)
class ActorPool:
    """The Ray Data actor pool ``run_ray`` runs strips on."""

    num_actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    calls_per_actor: int = 3  # tasks one actor works on at once (threads)
    resources: tuple[tuple[str, float], ...] = ()  # custom Ray resources per actor
    #: Strips per Ray Data task (0: ``strips_per_task``'s choice). Ray Data's driver costs a
    #: few ms per task; a task's strips run one after another in one of the actor's threads.
    strips_per_task: int = 0


#: Most strips per task ``strips_per_task`` chooses, and the tasks it keeps per actor thread.
MAX_STRIPS_PER_TASK = 16
TASKS_PER_THREAD = 8


def strips_per_task(n_strips: int, pool: ActorPool) -> int:
    """Strips per Ray Data task: 1 for small runs (finest retries and ledger), up to
    ``MAX_STRIPS_PER_TASK`` for a large one while each actor thread still gets
    ``TASKS_PER_THREAD`` tasks (so the last ones do not leave actors idle)."""
    if pool.strips_per_task > 0:
        return pool.strips_per_task
    threads = max(pool.num_actors * pool.calls_per_actor, 1)
    return int(np.clip(n_strips // (threads * TASKS_PER_THREAD), 1, MAX_STRIPS_PER_TASK))


@dataclass(frozen=True, slots=True)
class Block:
    """One block still to write: time step ``t`` (ISO ``time``), block row ``bi``, col ``bj``."""

    t: int
    time: str
    bi: int
    bj: int

    @property
    def key(self) -> BlockKey:
        return self.time, self.bi, self.bj


@dataclass(frozen=True, slots=True)
class Strip:
    """One task: blocks ``bjs`` (sorted) of block row ``bi`` at time step ``t`` (ISO ``time``)."""

    t: int
    time: str
    bi: int
    bjs: tuple[int, ...]

    @property
    def keys(self) -> list[BlockKey]:
        """The ledger keys of its blocks."""
        return [(self.time, self.bi, bj) for bj in self.bjs]

    def to_row(self) -> dict:
        """The strip as a Ray Data row."""
        return {"t": self.t, "time": self.time, "bi": self.bi, "bjs": list(self.bjs)}

    @classmethod
    def from_row(cls, row: Mapping) -> Strip:
        """Back from a Ray Data row (numpy scalars and arrays)."""
        return cls(int(row["t"]), str(row["time"]), int(row["bi"]), tuple(map(int, row["bjs"])))


def block_tasks(
    times: Sequence[str],
    t_indices: Sequence[int],
    blocks_for_t: Callable[[int], Iterable[tuple[int, np.ndarray]]],
    done: DoneBlocks | set[BlockKey],
    shard_blocks: int = 1,
) -> list[Block]:
    """The blocks still to do (not in ``done``), time by time, row by row (a row's columns
    are checked against the ledger in one vectorised step).

    With shards of ``shard_blocks`` blocks of a row, a shard with one block to do is done
    again whole: its writer replaces the shard (``store.clear_objects``), so the blocks of it
    already in the ledger are written again with it, never lost.
    """
    if not isinstance(done, DoneBlocks):
        done = DoneBlocks.from_keys(done)
    out = []
    for t in t_indices:
        time = times[t]
        for bi, cols in blocks_for_t(t):
            bi = int(bi)
            todo = done.missing(time, bi, cols)
            if shard_blocks > 1 and 0 < todo.size < len(cols):
                cols = np.asarray(cols, np.int64)
                todo = cols[np.isin(cols // shard_blocks, todo // shard_blocks)]
            out += [Block(int(t), time, bi, bj) for bj in todo.tolist()]
    return out


def strip_tasks(blocks: Sequence[Block], max_blocks: int) -> list[Strip]:
    """Blocks -> strips, the unit of one task: the blocks of one time step and block row in
    one column of ``max_blocks`` blocks (columns start at block 0), in the order time,
    column, block row.

    A strip is all of its column's blocks still to do, so when the store's shards are such
    columns (``store.create_store(shard_blocks=...)``) one task owns each shard and no two
    writers ever touch one, even with gaps (AOI holes, a resumed ledger). Going down a
    column rather than along a row means a strip's window shares its top rows of COG tiles
    with the strip read just before it, so the reader's decoded-tile cache needs a strip's
    width of tiles, not the region's (``read.BLOCK_CACHE_MB``).
    """
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
    cols: dict[tuple[int, int, int], list[int]] = {}
    time_of: dict[int, str] = {}
    for b in blocks:
        cols.setdefault((b.t, b.bi, b.bj // max_blocks), []).append(b.bj)
        time_of[b.t] = b.time
    when = {t: i for i, t in enumerate(dict.fromkeys(k[0] for k in cols))}  # times as given
    order = sorted(cols, key=lambda k: (when[k[0]], k[2], k[1]))
    return [Strip(t, time_of[t], bi, tuple(sorted(cols[t, bi, c]))) for t, bi, c in order]


def strip_window(lat: BlockLattice, bi: int, bjs: Sequence[int]) -> Window:
    """(row, col, height, width) covering the windows of blocks ``bjs`` of block row ``bi``."""
    wins = [lat.window(bi, int(bj)) for bj in bjs]
    r, h = wins[0][0], wins[0][2]
    c0 = min(w[1] for w in wins)
    c1 = max(w[1] + w[3] for w in wins)
    return r, c0, h, c1 - c0


def read_clear_s2(
    items: Sequence[dict], grid, out_bands: Sequence[str], spec: CompositeSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 ``out_bands`` (N, C, h, w), clear (N, h, w) and when each was seen (N,) int64
    (``periods.obs_seconds``) on a block's grid, the items in time order. Read through the
    windowed COG reader and its decoded-tile cache, as SAR and the other S2 inputs are
    (``cube.window_load``: the values of ``cube.load.load_optical``, without a dask graph
    per block, which cost the default composite 3x the job's CPU). The cloud test reads the
    items' ``CLP`` where they carry it, as the cube does."""
    from sar2opt.cube.build import clear_mask
    from sar2opt.cube.window_load import by_time, read_clp, read_optical

    items = by_time(items)
    arr = read_optical(items, grid, list(spec.opt_bands), spec.profile)
    clear = clear_mask(arr, spec.opt_bands, spec.rule, clp=read_clp(items, grid, spec.profile))
    idx = [list(spec.opt_bands).index(b) for b in out_bands]
    when = np.array([obs_seconds(it["properties"]["datetime"]) for it in items], np.int64)
    return arr[:, idx], clear, when


def strip_tiles(lat: BlockLattice, strip: Strip, sar: np.ndarray) -> list[np.ndarray]:
    """The window of each block of ``strip`` (views), cut from the strip's ``sar`` (..., h,
    w) (or any input) read over ``strip_window``."""
    c0 = strip_window(lat, strip.bi, strip.bjs)[1]
    out = []
    for bj in strip.bjs:
        _, c, _, w = lat.window(strip.bi, bj)
        out.append(sar[..., c - c0 : c - c0 + w])
    return out


@dataclass(frozen=True)
class FitLattice:
    """The blocks whose scene fits a strip's references blend (``fit_lattice``): ``area`` on
    the grid holds their ``windows`` (area coordinates, rows x cols), centred on their
    cores at ``centres_y`` x ``centres_x``."""

    area: Window
    windows: tuple[tuple[Window, ...], ...]
    centres_y: tuple[float, ...]
    centres_x: tuple[float, ...]

    def crop(self, arr: np.ndarray, window: Window) -> np.ndarray:
        """The part of ``arr`` (..., h, w) over the area that covers ``window``."""
        r, c = window[0] - self.area[0], window[1] - self.area[1]
        return arr[..., r : r + window[2], c : c + window[3]]


def fit_lattice(lat: BlockLattice, bi: int, bjs: Sequence[int], reach_px: int = 0) -> FitLattice:
    """The strip's blocks and the blocks around them, inside the grid: what a pixel's
    blended scene fit reaches (it blends the fits of the 2 x 2 block centres around it), at
    every pixel within ``reach_px`` of the strip's cores (the reference spreads the fit's
    residual from the clear pixels that far: ``models.reference.FILL_REACH_PX``). One block
    a side while the reach is at most half a block, else as many as it takes, so that every
    strip gives a pixel the reference a fit over the whole grid gives it."""
    k = max(1, math.ceil(0.5 + reach_px / lat.block_px))
    rows = [b for b in range(bi - k, bi + k + 1) if 0 <= b < lat.n_rows]
    cols = range(max(min(bjs) - k, 0), min(max(bjs) + k, lat.n_cols - 1) + 1)
    return lattice_fits(lat, rows, cols)


def grid_fit_lattice(lat: BlockLattice) -> FitLattice:
    """Every block of the grid: the blended scene fit of a whole (small) grid at once, as a
    run of strips gives it (``evaluate.py`` scores a chip through it)."""
    return lattice_fits(lat, range(lat.n_rows), range(lat.n_cols))


def scene_fits(meta: Mapping, h: int, w: int) -> FitLattice | None:
    """For a scene-fit checkpoint (its metadata ``meta``), the lattice of its ``infer``
    settings over a whole h x w scene (``grid_fit_lattice``): what ``evaluate.py`` and the
    training job's reference gate blend its reference over, as this module's fill does.
    None for other models, or when its saved config cannot be read."""
    from sar2opt.config import config_from_dict

    if (meta.get("model") or {}).get("reference") != "scene_fit":
        return None
    try:
        spec = config_from_dict(meta.get("config") or {}, saved=True).infer
    except Sar2OptError:
        return None
    grid = GridSpec(32633, 10.0, (0.0, 0.0, 10.0 * w, 10.0 * h))  # only its shape counts
    return grid_fit_lattice(BlockLattice(grid, spec.tile_px, spec.overlap_px))


def lattice_fits(lat: BlockLattice, rows: Sequence[int], cols: Sequence[int]) -> FitLattice:
    """The blocks ``rows`` x ``cols`` (consecutive) as a ``FitLattice``."""
    wins = [[lat.window(i, j) for j in cols] for i in rows]
    r0 = min(w[0] for row in wins for w in row)
    c0 = min(w[1] for row in wins for w in row)
    r1 = max(w[0] + w[2] for row in wins for w in row)
    c1 = max(w[1] + w[3] for row in wins for w in row)
    cores = [[lat.core(i, j) for j in cols] for i in rows]
    return FitLattice(
        (r0, c0, r1 - r0, c1 - c0),
        tuple(tuple((w[0] - r0, w[1] - c0, w[2], w[3]) for w in row) for row in wins),
        tuple((row[0][0] + row[0][2]) / 2 - r0 for row in cores),
        tuple((k[1] + k[3]) / 2 - c0 for k in cores[0]),
    )


def block_crop(lat: BlockLattice, strip: Strip, bj: int, arr: np.ndarray) -> np.ndarray:
    """The core of block ``bj`` of ``strip`` cut from ``arr`` (..., h, w) over its window."""
    r, c, _, _ = lat.window(strip.bi, bj)
    r0, c0, r1, c1 = lat.core(strip.bi, bj)
    return np.asarray(arr)[..., r0 - r : r1 - r, c0 - c : c1 - c]


#: The S2 item sets (``FillJob.s2_by_time`` entries, by id, kept alive) a strip-wide read
#: found warped: ``strip_clear_s2`` does not try them strip-wide again (bounded).
_WARPED_ITEMS: dict[int, tuple] = {}
_WARPED_MAX = 64
#: Most summed-area cells of a strip-wide composite: below 2**24 its float32 box sums of
#: 0/1 (``edge_weight``) are exact integers, so they do not depend on the window.
_STRIP_S2_MAX_PX = 2**24


@dataclass(frozen=True)
class ClearS2:
    """The clear-S2 composite of one time step over ``win`` (row, col, h, w on the grid):
    the picked S2 (C, h, w), which observation each pixel took (-1: none), how much of it
    each pixel keeps (the feather) and when each observation was made."""

    win: Window
    s2: np.ndarray
    pick: np.ndarray
    keep: np.ndarray
    when: np.ndarray


def clear_s2_over(job: FillJob, t: int, win: Window) -> ClearS2:
    """Time step ``t``'s clear S2 over ``win``: read (``read_clear_s2``), the nearest clear
    observation picked per pixel, the feather taken over the mask edges."""
    composite = job.composite
    obs, clear, when = read_clear_s2(
        job.s2_by_time[t], job.lattice.grid.subgrid(*win), job.out_bands, composite
    )
    ref = job.ref_seconds(t)
    s2, pick = nearest_clear_pick(obs, clear, (when - ref) / 86400.0, job.s2_max_dt(t))
    return ClearS2(win, s2, pick, edge_weight(pick >= 0, composite.feather_px), when)


def clear_s2_margin(spec: CompositeSpec) -> int:
    """How far around a block its clear S2 is read: the cloud dilation so a cloud just across the
    block edge still grows into the block (the mask is the one of the whole image, and no
    seam shows), and ``feather_px`` more so the ramp sees the mask edges across it too."""
    return spec.rule.cloud_dilate_px + spec.feather_px


def strip_clear_s2(job: FillJob, strip: Strip) -> ClearS2 | None:
    """The strip's clear S2, read once over the union of its blocks' windows (their cores
    grown by ``clear_s2_margin``), for every block to cut its core from
    (``offer_clear_s2``); None where each block must read its own.

    A block's composite depends only on pixels within the margin of its core (the cloud
    test is per pixel, its dilation and the feather's box reach no farther, and the box
    sums are exact integers), so any larger window gives it the same bits, and the strip's
    blocks share one read per item and band, one cloud test, one pick and feather. Not for
    one block, nor where a read of the strip was warped (a warped pixel may depend on the
    window: ``read.warped_reads``; those items are then read block by block) or the strip
    is too large for exact sums."""
    from sar2opt.infer.read import warped_reads

    items = job.s2_by_time[strip.t]
    if len(strip.bjs) < 2 or id(items) in _WARPED_ITEMS:
        return None
    m, feather = clear_s2_margin(job.composite), job.composite.feather_px
    top, left, h, _ = job.lattice.halo(strip.bi, strip.bjs[0], m)
    last = job.lattice.halo(strip.bi, strip.bjs[-1], m)
    win = (top, left, h, last[1] + last[3] - left)
    if (h + 2 * feather) * (win[3] + 2 * feather) > _STRIP_S2_MAX_PX:
        return None
    before = warped_reads()
    shared = clear_s2_over(job, strip.t, win)
    if warped_reads() == before:
        return shared
    if len(_WARPED_ITEMS) >= _WARPED_MAX:
        _WARPED_ITEMS.clear()
    _WARPED_ITEMS[id(items)] = items
    return None


def offer_clear_s2(
    job: FillJob, strip: Strip, bj: int, best: BestEvidence, shared: ClearS2 | None = None
) -> np.ndarray:
    """Offer block ``bj`` the clear S2 pixels of its time step (``job.s2_by_time``), each
    with the date it was seen, nearest the time step's reference first. Returns their
    ``keep`` (H, W): 1 far from a cloud-mask edge, falling to ~0 at it over the feather
    (``CompositeSpec.feather_px``), 0 where no clear S2 pixel was found. Cut from the
    strip's ``shared`` read (``strip_clear_s2``), else read over the block's own window."""
    lat = job.lattice
    got = shared or clear_s2_over(
        job, strip.t, lat.halo(strip.bi, bj, clear_s2_margin(job.composite))
    )
    pr0, pc0 = got.win[:2]
    r0, c0, r1, c1 = lat.core(strip.bi, bj)
    inner = (slice(r0 - pr0, r1 - pr0), slice(c0 - pc0, c1 - pc0))
    keep = got.keep[inner].copy()
    s2, pick = got.s2[:, inner[0], inner[1]].copy(), got.pick[inner]
    source = np.where(pick >= 0, SOURCE_S2, SOURCE_NODATA).astype(np.uint8)
    obs_s = np.where(pick >= 0, got.when[np.maximum(pick, 0)], 0)
    ref = job.ref_seconds(strip.t)
    best.offer(s2, source, np.float32(0.0), obs_s, evidence_rank(source), ref)
    return keep


def process_strip(strip: Strip, job: FillJob, predict: Predict) -> list[BlockKey]:
    """One strip to written blocks; the finished keys.

    Every block of the strip folds its evidence (``periods.BestEvidence``): the clear S2
    pixels of the time step (with the composite on), and the synthesis from each S1
    acquisition of the time step (``FillJob.acquisitions``: one, or a period's), read over
    the strip's window and predicted ``batch_size`` blocks at a time; near a cloud-mask
    edge the clear S2 is feathered into the synthesis (``BestEvidence.feather_over``). An
    acquisition is skipped once every pixel holds clear S2 away from any mask edge (a
    period already clear in S2 costs no forward pass). Then all blocks are written at once
    (one zarr call per array for the strip's neighbouring blocks).

    ``predict`` is the only step that needs the model: ``StripWorker`` runs several strips
    at once in threads, and the predictor lets one of them run the model at a time while
    the others read or write.
    """
    lat, t = job.lattice, strip.t
    shape = {bj: core_shape(lat.core(strip.bi, bj)) for bj in strip.bjs}
    best: dict[int, BestEvidence] = {}  # the synthesis
    clear: dict[int, BestEvidence] = {}  # the clear S2, and how much of it each pixel keeps
    keep: dict[int, np.ndarray] = {}
    if job.composite and job.composite.max_dt_days > 0 and job.s2_by_time and job.s2_by_time[t]:
        shared = strip_clear_s2(job, strip)
        for bj in strip.bjs:
            clear[bj] = BestEvidence(len(job.out_bands), shape[bj])
            keep[bj] = offer_clear_s2(job, strip, bj, clear[bj], shared)
        del shared
    window = strip_window(lat, strip.bi, strip.bjs)
    ref = job.ref_seconds(t)
    passes = job.acquisitions_of(t)
    feather_px = (lat.tile_px - lat.block_px) // 2  # the context each window has
    fits = None
    if job.blend_reference:
        from sar2opt.models.reference import FILL_REACH_PX

        fits = fit_lattice(lat, strip.bi, strip.bjs, FILL_REACH_PX)
    for a in passes:
        if len(keep) == len(strip.bjs) and all((k >= 1).all() for k in keep.values()):
            break  # every pixel real clear S2 away from the mask edges
        inputs = read_inputs(job, a, window if fits is None else fits.area)
        if fits is not None:
            field = predict.reference_fields(
                {k: v[None] for k, v in inputs.items()}, fits.windows, fits.centres_y,
                fits.centres_x,
            )  # fmt: skip
            inputs = {k: fits.crop(v, window) for k, v in (inputs | (field or {})).items()}
        tiles = {k: strip_tiles(lat, strip, v) for k, v in inputs.items()}
        weights = None
        if len(passes) > 1:  # swaths of several passes meet: feather their borders
            valid = np.isfinite(inputs["sar"]).all(axis=0)
            if "dem" in inputs:
                valid &= np.isfinite(inputs["dem"]).all(axis=0)
            weights = strip_tiles(lat, strip, edge_weight(valid, feather_px)[None])
        for i in range(0, len(strip.bjs), job.batch_size):
            out = predict({k: np.stack(v[i : i + job.batch_size]) for k, v in tiles.items()})
            # the calibrated expected |error| where the predictor has one, else the spread
            unc = out.get("uncertainty", out["spread"])
            for k, (bj, pred, spread) in enumerate(
                zip(strip.bjs[i : i + job.batch_size], out["pred"], unc, strict=True)
            ):
                pred, spread = block_crop(lat, strip, bj, pred), block_crop(lat, strip, bj, spread)
                if bj not in best:
                    best[bj] = BestEvidence(pred.shape[0], shape[bj])
                # where an SO/SOD model had a prior (all or no bands: one clear S2 pixel)
                with_prior = (
                    block_crop(lat, strip, bj, np.isfinite(tiles["prior"][i + k]).all(axis=0))
                    if "prior" in tiles
                    else None
                )
                # where an SC/SCO/SCOD model saw that date's S2 (cloudy or clear) of the pixel
                same_date = (
                    block_crop(lat, strip, bj, np.isfinite(tiles["cloudy"][i + k][:-1]).all(axis=0))
                    if "cloudy" in tiles
                    else None
                )
                source = synthesis_source(pred, with_prior, same_date)
                weight = None if weights is None else block_crop(lat, strip, bj, weights[i + k][0])
                best[bj].offer(
                    pred, source, spread, job.obs_seconds_of(a), evidence_rank(source), ref, weight
                )
    for bj, s2 in clear.items():
        s2.feather_over(best.get(bj) or BestEvidence(len(job.out_bands), shape[bj]), keep[bj])
        best[bj] = s2
    blocks = [
        (t, lat.core(strip.bi, bj), b.optical, b.source, b.uncertainty, b.obs_time)
        for bj, b in best.items()
    ]
    (job.write or write_strip)(job, strip, blocks)
    return strip.keys


def read_inputs(job: FillJob, a: int, window: Window) -> dict[str, np.ndarray]:
    """Acquisition ``a``'s SAR and the model's other inputs (``job.aux``) over ``window``."""
    inputs = {"sar": job.sar.read(a, window)}
    if job.aux is not None:
        inputs |= job.aux.read(a, window)
    return inputs


def core_shape(core: tuple[int, int, int, int]) -> tuple[int, int]:
    return core[2] - core[0], core[3] - core[1]


def write_strip(job: FillJob, strip: Strip, blocks: Sequence[tuple]) -> None:
    """Write the strip's composed blocks ``(t, core, optical, source, uncertainty,
    obs_time)`` to ``job.store``."""
    write_blocks(job.store, blocks)


def run_local(
    strips: Sequence[Strip], job: FillJob, make_predictor: Callable[[], Predict]
) -> Iterator[list[BlockKey]]:
    """The pipeline in this process, strip by strip: yields the finished keys of each strip."""
    predict = make_predictor()
    for strip in strips:
        yield process_strip(strip, job, predict)


#: Codec pipeline of zarrs (Rust), when installed: the actors' chunk writes then cost ~3.2
#: instead of ~5 ms of CPU a block here (zarr-python's asyncio hops and its per-chunk codec
#: calls); the stores' bytes decode to the same values. ``SAR2OPT_ZARRS=0`` turns it off.
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"


def use_zarrs() -> bool:
    """Route this process's zarr chunk encoding through zarrs when it is installed (and not
    turned off); whether it does. Called in the actors only: it sets zarr's global config."""
    if os.environ.get("SAR2OPT_ZARRS", "1") == "0" or importlib.util.find_spec("zarrs") is None:
        return False
    import zarr

    zarr.config.set({"codec_pipeline.path": ZARRS_PIPELINE})
    return True


#: Set to a file, each actor appends one JSON line of its start-up stamps there (epoch s:
#: process start, this module imported, constructor entered, predictor made, first call in and
#: out): ``benchmarks/bench_infer.py`` prints where the job's start-up goes.
STARTUP_LOG_ENV = "SAR2OPT_STARTUP_LOG"


def process_start_s(pid: int | str = "self") -> float:
    """When process ``pid`` started (epoch s, from /proc; 0 where there is none).

    Its age (seconds since boot now, minus its start in ticks since boot) taken from the
    current wall clock: /proc/stat's ``btime`` plus the start ticks drifts from
    ``time.time()`` once the wall clock has been stepped since boot (seen on a VM: a
    process "started" 65 s after it imported a module)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


class StripWorker:
    """Ray Data actor (``map_batches`` callable class): the predictor made once; each call
    takes strips and reads, predicts, composes and writes their blocks (``process_strip``).

    Ray Data runs ``calls_per_actor`` calls of one actor at once, in threads: while one
    thread runs the model (``TilePredictor.lock``: one forward at a time, on the actor's core
    or GPU) the others read SAR (GDAL releases the GIL), take hypothesis statistics, or
    compose and write. SAR and predictions stay in the actor's memory and never cross the
    object store, so memory is a few strips per call however large the AOI, and only the
    finished keys go back to the driver.
    """

    def __init__(self, job: FillJob, make_predictor: Callable[[], Predict]) -> None:
        import ray

        from sar2opt.infer import predictor

        self.stamps = {"process": process_start_s(), "module": IMPORTED_AT, "init": time.time()}
        self.stamps["torch"] = predictor.IMPORTED_AT
        self.stamp_lock = threading.Lock()
        self.job = job
        self.zarrs = use_zarrs()
        self.predictor = make_predictor()
        self.stamps["predictor"] = time.time()
        # where the strips were done: run_ray's per-node summary (the job's own record)
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.stamp_lock:  # calls run in several threads: the first one stamps
            first = "call" not in self.stamps
            self.stamps.setdefault("call", time.time())
        done: list[BlockKey] = []
        for i in range(len(batch["t"])):
            strip = Strip.from_row({k: v[i] for k, v in batch.items()})
            done += process_strip(strip, self.job, self.predictor)
        if first:
            self._log_startup()
        return {
            "time": np.array([k[0] for k in done], dtype=object),
            "bi": np.array([k[1] for k in done], dtype=np.int64),
            "bj": np.array([k[2] for k in done], dtype=np.int64),
            "node": np.array([self.node] * len(done), dtype=object),
        }

    def _log_startup(self) -> None:
        path = os.environ.get(STARTUP_LOG_ENV)
        if path:
            line = json.dumps({**self.stamps, "called": time.time(), "pid": os.getpid()})
            with open(path, "a") as f:
                f.write(line + "\n")


def run_ray(
    strips: Sequence[Strip],
    job: FillJob,
    make_predictor: Callable[[], Predict],
    pool: ActorPool = ActorPool(),
) -> Iterator[list[BlockKey]]:
    """The pipeline on Ray Data (needs Ray initialised): yields finished keys as they come.

    A pool of ``pool.num_actors`` ``StripWorker`` actors takes tasks of ``strips_per_task``
    strips, ``calls_per_actor`` tasks at once per actor (one predicting, the others reading
    or writing), a task's strips one after another. Ray Data keeps at most
    ``calls_per_actor + 1`` tasks queued per actor: that is the backpressure, and what bounds
    memory (one strip in work per call). A task is the unit of retry and of the keys that
    come back, so a large run groups up to ``MAX_STRIPS_PER_TASK`` strips per task: Ray
    Data's driver costs ~1-3 ms per task, which would be more than a GPU's time per strip.

    Actors restart when their process dies and their strips are retried (Ray Data's
    actor-pool defaults: ``max_restarts=-1``, ``max_task_retries=-1``; a test kills one);
    writes are idempotent, so a retried block writes the same bytes.
    """
    import ray.data

    if pool.calls_per_actor < 1:
        raise ValueError(f"calls_per_actor must be >= 1, got {pool.calls_per_actor}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.raise_original_map_exception = True
    rows = [s.to_row() for s in strips]
    per_task = strips_per_task(len(rows), pool)
    ds = ray.data.from_items(rows, override_num_blocks=max(-(-len(rows) // per_task), 1))
    del rows
    ds = ds.map_batches(
        StripWorker,
        fn_constructor_kwargs={"job": job, "make_predictor": make_predictor},
        batch_size=None,  # a whole task (its block of strips) per call
        compute=ray.data.ActorPoolStrategy(
            size=pool.num_actors,
            max_concurrent_calls_per_actor=pool.calls_per_actor,
            max_tasks_in_flight_per_actor=pool.calls_per_actor + 1,
            enable_true_multi_threading=True,
        ),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor or None,
        **({"resources": dict(pool.resources)} if pool.resources else {}),
    )
    by_node: dict[str, int] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for node in batch["node"]:
            by_node[str(node)] = by_node.get(str(node), 0) + 1
        yield [
            (str(t), int(bi), int(bj))
            for t, bi, bj in zip(batch["time"], batch["bi"], batch["bj"], strict=True)
        ]
    for node, n in sorted(by_node.items()):  # where the work ran (a lost node's share too)
        print(f"ray: blocks done on node {node}: {n}", flush=True)


def drain(
    finished: Iterator[list[BlockKey]],
    ledger: TileLedger,
    total: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Record every finished block in the ledger as it arrives; returns how many."""
    done = 0
    for keys in finished:
        ledger.record(keys)
        done += len(keys)
        if progress:
            progress(done, total)
    if done != total:
        raise RuntimeError(f"pipeline finished {done} blocks, expected {total}")
    return done
