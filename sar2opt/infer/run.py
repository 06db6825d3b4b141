"""Fill a block store: read SAR strips -> hypotheses -> composite + write, on an actor pool.

The unit of work is a strip: up to ``read_blocks`` neighbouring blocks of a block row, read
with one windowed read per asset (``read_sar_strip``), predicted ``batch_size`` blocks at a
time (``TilePredictor``), cropped to their cores, composited with clear S2 and written
(``finish_block_rows``): ``process_strip``. On Ray, a Ray Data pool of ``StripWorker``
actors (model loaded once per actor) runs several strips per actor at once in threads, so
reads and writes overlap the forward pass and no array crosses the object store; the driver
only appends the finished keys to the ledger. ``executor="local"`` runs the same
``process_strip`` in-process (tests, tiny AOIs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sar2opt.infer.composite import compose, nearest_clear
from sar2opt.infer.ledger import BlockKey, TileLedger
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.store import write_blocks
from sar2opt.profiles import CollectionProfile


@dataclass(frozen=True)
class CompositeSpec:
    """How real S2 pixels replace the synthesis (``max_dt_days`` <= 0 turns it off)."""

    max_dt_days: float = 0.0
    opt_bands: tuple[str, ...] = ()
    cloud_brightness: float = 0.10
    cloud_whiteness: float = 0.75
    shadow_brightness: float = 0.016
    dilate_px: int = 0
    profile: CollectionProfile | None = None  # the S2 collection's (re-keys, signs, scales)


def block_tasks(
    times: Sequence[str],
    t_indices: Sequence[int],
    blocks_for_t: Callable[[int], Iterable[tuple[int, np.ndarray]]],
    done: set[BlockKey],
) -> list[dict]:
    """Rows ``{t, time, bi, bj}`` of the blocks still to do, time by time, row by row."""
    rows = []
    for t in t_indices:
        for bi, cols in blocks_for_t(t):
            for bj in cols:
                if (times[t], int(bi), int(bj)) not in done:
                    rows.append({"t": int(t), "time": times[t], "bi": int(bi), "bj": int(bj)})
    return rows


def strip_tasks(rows: Sequence[dict], max_blocks: int) -> list[dict]:
    """Block rows -> strips ``{t, time, bi, bjs}``, the unit of one task: the blocks of one
    time step and block row in one column of ``max_blocks`` blocks (columns start at block
    0), in the order time, column, block row.

    A strip is all of its column's blocks still to do, so when the store's shards are such
    columns (``store.create_store(shard_blocks=...)``) one task owns each shard and no two
    writers ever touch one, even with gaps (AOI holes, a resumed ledger). Going down a
    column rather than along a row means a strip's window shares its top rows of COG tiles
    with the strip read just before it, so the reader's decoded-tile cache needs a strip's
    width of tiles, not the region's (``read.BLOCK_CACHE_MB``).
    """
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
    by_key: dict[tuple[int, int, int], dict] = {}
    for r in rows:
        key = (int(r["t"]), int(r["bi"]), int(r["bj"]) // max_blocks)
        strip = by_key.setdefault(key, {"t": key[0], "time": r["time"], "bi": key[1], "bjs": []})
        strip["bjs"].append(int(r["bj"]))
    when = {t: i for i, t in enumerate(dict.fromkeys(k[0] for k in by_key))}  # times as given
    order = sorted(by_key, key=lambda k: (when[k[0]], k[2], k[1]))
    return [{**by_key[k], "bjs": sorted(by_key[k]["bjs"])} for k in order]


def strip_window(lat: BlockLattice, bi: int, bjs: Sequence[int]) -> tuple[int, int, int, int]:
    """(row, col, height, width) covering the windows of blocks ``bjs`` of block row ``bi``."""
    wins = [lat.window(bi, int(bj)) for bj in bjs]
    r, h = wins[0][0], wins[0][2]
    c0 = min(w[1] for w in wins)
    c1 = max(w[1] + w[3] for w in wins)
    return r, c0, h, c1 - c0


def split_strip(strip: dict, lat: BlockLattice, sar: np.ndarray) -> list[dict]:
    """One row per block of ``strip``, each with its window's ``sar`` cut from the strip's."""
    bi = int(strip["bi"])
    _, c0, _, _ = strip_window(lat, bi, strip["bjs"])
    out = []
    for bj in strip["bjs"]:
        _, c, _, w = lat.window(bi, int(bj))
        row = {"t": int(strip["t"]), "time": str(strip["time"]), "bi": bi, "bj": int(bj)}
        row["sar"] = np.ascontiguousarray(sar[:, :, c - c0 : c - c0 + w])
        out.append(row)
    return out


def read_sar_strip(
    strip: dict,
    *,
    lattice: dict,
    items_by_time: Sequence[Sequence[dict]],
    bands: Sequence[str],
    profile: CollectionProfile | None = None,
) -> list[dict]:
    """``Dataset.flat_map`` step: read the SAR (Cs, h, w) of a strip of blocks at once and
    split it into one row per block (``profile``: the S1 collection's, so assets are re-keyed
    and signed here, in the reading worker)."""
    from sar2opt.infer.read import read_sar_db

    lat = BlockLattice.from_dict(lattice)
    r, c, h, w = strip_window(lat, int(strip["bi"]), strip["bjs"])
    sar = read_sar_db(items_by_time[int(strip["t"])], lat.grid.subgrid(r, c, h, w), bands, profile)
    return split_strip(strip, lat, sar)


def read_clear_s2(
    items: Sequence[dict], grid, target_iso: str, out_bands: Sequence[str], spec: CompositeSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 ``out_bands`` (N, C, h, w), clear (N, h, w) and dt days (N,) of a block's grid."""
    import pandas as pd

    from sar2opt.cube.clean import cloud_shadow_mask
    from sar2opt.cube.load import load_optical

    da = load_optical(list(items), grid, list(spec.opt_bands), profile=spec.profile)
    arr = np.asarray(da.values, np.float32)
    flagged = cloud_shadow_mask(
        arr,
        list(spec.opt_bands),
        cloud_brightness=spec.cloud_brightness,
        cloud_whiteness=spec.cloud_whiteness,
        shadow_brightness=spec.shadow_brightness,
        dilate_px=spec.dilate_px,
    )
    idx = [list(spec.opt_bands).index(b) for b in out_bands]
    t0 = pd.Timestamp(target_iso).tz_localize(None) if pd.Timestamp(target_iso).tz else None
    t0 = t0 or pd.Timestamp(target_iso)
    dt = (pd.to_datetime(da.time.values) - t0) / pd.Timedelta(days=1)
    return arr[:, idx], ~flagged, np.asarray(dt, np.float64)


def compose_block_row(
    row: dict,
    *,
    lattice: dict,
    s2_by_time: Sequence[Sequence[dict]] = (),
    out_bands: Sequence[str] = (),
    composite: CompositeSpec | None = None,
) -> tuple[int, tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray]:
    """Crop the core of a predicted block and composite it with clear S2: ``(t, core,
    optical, source, uncertainty)``, what ``store.write_blocks`` writes."""
    lat = BlockLattice.from_dict(lattice)
    bi, bj, t = int(row["bi"]), int(row["bj"]), int(row["t"])
    r, c, _, _ = lat.window(bi, bj)
    core = lat.core(bi, bj)
    r0, c0, r1, c1 = core
    pred = np.asarray(row["pred"])[:, r0 - r : r1 - r, c0 - c : c1 - c]
    spread = np.asarray(row["spread"])[r0 - r : r1 - r, c0 - c : c1 - c]
    h, w = r1 - r0, c1 - c0
    s2, found = np.full_like(pred, np.nan), np.zeros((h, w), bool)
    if composite is not None and composite.max_dt_days > 0 and s2_by_time and s2_by_time[t]:
        # read a margin of dilate_px so a cloud just across the block edge still grows into
        # the block: the mask is then the one of the whole image, and no seam shows
        pr0, pc0, pr1, pc1 = _grow(core, composite.dilate_px, lat.grid.shape)
        obs, clear, dt = read_clear_s2(
            s2_by_time[t],
            lat.grid.subgrid(pr0, pc0, pr1 - pr0, pc1 - pc0),
            str(row["time"]),
            out_bands,
            composite,
        )
        inner = (slice(r0 - pr0, r1 - pr0), slice(c0 - pc0, c1 - pc0))
        s2, found = nearest_clear(
            obs[..., inner[0], inner[1]], clear[:, inner[0], inner[1]], dt, composite.max_dt_days
        )
    optical, source = compose(pred, s2, found)
    return t, core, optical, source, spread


def finish_block_rows(rows: Sequence[dict], *, store: str, **compose_kwargs) -> list[dict]:
    """Compose every predicted block of a batch, write them (neighbours in one write per
    array), return their keys ``{t, time, bi, bj}`` for the ledger."""
    write_blocks(store, [compose_block_row(row, **compose_kwargs) for row in rows])
    return [
        {"t": int(r["t"]), "time": str(r["time"]), "bi": int(r["bi"]), "bj": int(r["bj"])}
        for r in rows
    ]


def _grow(
    core: tuple[int, int, int, int], px: int, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``core`` (row0, col0, row1, col1) grown by ``px`` on every side, clipped to ``shape``."""
    r0, c0, r1, c1 = core
    return max(r0 - px, 0), max(c0 - px, 0), min(r1 + px, shape[0]), min(c1 + px, shape[1])


def process_strip(
    strip: dict,
    *,
    batch_size: int,
    read_fn: Callable[..., list[dict]],
    read_kwargs: Mapping,
    predict: Callable[[dict], dict],
    finish_fn: Callable[..., list[dict]],
    finish_kwargs: Mapping,
) -> list[dict]:
    """One strip from SAR to written blocks: read it, predict ``batch_size`` blocks at a
    time, compose and write them all (one zarr call per array for the strip's neighbouring
    blocks); the finished keys ``{t, time, bi, bj}``.

    ``predict`` is the only step that needs the model: ``StripWorker`` runs several strips
    at once in threads, and the predictor lets one of them run the model at a time while
    the others read or write.
    """
    blocks = read_fn(strip, **read_kwargs)
    rows: list[dict] = []
    for i in range(0, len(blocks), batch_size):
        chunk = blocks[i : i + batch_size]
        out = predict({k: np.stack([np.asarray(r[k]) for r in chunk]) for k in chunk[0]})
        rows += [{k: v[j] for k, v in out.items()} for j in range(len(chunk))]
    return finish_fn(rows, **finish_kwargs)


def run_local(
    rows: Sequence[dict],
    *,
    batch_size: int,
    read_fn: Callable[..., list[dict]],
    read_kwargs: Mapping,
    predictor: Callable[[dict], dict],
    finish_fn: Callable[..., list[dict]],
    finish_kwargs: Mapping,
) -> Iterator[list[dict]]:
    """The pipeline in this process, strip by strip: yields the finished rows of each strip.

    ``rows`` are strips (``strip_tasks``); ``read_fn(strip, **read_kwargs)`` returns one row
    per block."""
    for strip in rows:
        yield process_strip(
            strip,
            batch_size=batch_size,
            read_fn=read_fn,
            read_kwargs=read_kwargs,
            predict=predictor,
            finish_fn=finish_fn,
            finish_kwargs=finish_kwargs,
        )


class StripWorker:
    """Ray Data actor (``map_batches`` callable class): the model loaded once; each call takes
    strips and reads, predicts, composes and writes their blocks (``process_strip``).

    Ray Data runs ``calls_per_actor`` calls of one actor at once, in threads: while one
    thread runs the model (``TilePredictor.lock``: one forward at a time, on the actor's core
    or GPU) the others read SAR (GDAL releases the GIL), take hypothesis statistics, or
    compose and write. SAR and predictions stay in the actor's memory and never cross the
    object store, so memory is a few strips per call however large the AOI, and only the
    finished keys go back to the driver.
    """

    def __init__(
        self,
        *,
        predictor_cls: type,
        predictor_kwargs: Mapping,
        read_fn: Callable[..., list[dict]],
        read_kwargs: Mapping,
        finish_fn: Callable[..., list[dict]],
        finish_kwargs: Mapping,
        batch_size: int,
    ) -> None:
        self.predictor = predictor_cls(**predictor_kwargs)
        self._steps = {
            "batch_size": batch_size,
            "read_fn": read_fn,
            "read_kwargs": dict(read_kwargs),
            "predict": self.predictor,
            "finish_fn": finish_fn,
            "finish_kwargs": dict(finish_kwargs),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done: list[dict] = []
        for i in range(len(batch["t"])):
            strip = {
                "t": int(batch["t"][i]),
                "time": str(batch["time"][i]),
                "bi": int(batch["bi"][i]),
                "bjs": [int(b) for b in batch["bjs"][i]],
            }
            done += process_strip(strip, **self._steps)
        return {
            "time": np.array([str(d["time"]) for d in done], dtype=object),
            "bi": np.array([d["bi"] for d in done], dtype=np.int64),
            "bj": np.array([d["bj"] for d in done], dtype=np.int64),
        }


def run_ray(
    rows: Sequence[dict],
    *,
    batch_size: int,
    num_actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    read_fn: Callable[..., list[dict]],
    read_kwargs: Mapping,
    predictor_cls: type,
    predictor_kwargs: Mapping,
    finish_fn: Callable[..., list[dict]],
    finish_kwargs: Mapping,
    calls_per_actor: int = 3,
) -> Iterator[list[dict]]:
    """The pipeline on Ray Data (needs Ray initialised): yields finished rows as they come.

    ``rows`` are strips (``strip_tasks``); a pool of ``num_actors`` ``StripWorker`` actors
    takes them one at a time, ``calls_per_actor`` at once per actor (one predicting, the
    others reading or writing). Ray Data keeps at most ``calls_per_actor + 1`` strips queued
    per actor: that is the backpressure, and what bounds memory.

    Actors restart when their process dies and their strips are retried (Ray Data's
    actor-pool defaults: ``max_restarts=-1``, ``max_task_retries=-1``; a test kills one);
    writes are idempotent, so a retried block writes the same bytes.
    """
    import ray.data

    if calls_per_actor < 1:
        raise ValueError(f"calls_per_actor must be >= 1, got {calls_per_actor}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.raise_original_map_exception = True
    ds = ray.data.from_items(list(rows), override_num_blocks=max(len(rows), 1))
    ds = ds.map_batches(
        StripWorker,
        fn_constructor_kwargs={
            "predictor_cls": predictor_cls,
            "predictor_kwargs": dict(predictor_kwargs),
            "read_fn": read_fn,
            "read_kwargs": dict(read_kwargs),
            "finish_fn": finish_fn,
            "finish_kwargs": dict(finish_kwargs),
            "batch_size": batch_size,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            size=num_actors,
            max_concurrent_calls_per_actor=calls_per_actor,
            max_tasks_in_flight_per_actor=calls_per_actor + 1,
            enable_true_multi_threading=True,
        ),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n = len(batch["bi"])
        yield [
            {"time": str(batch["time"][i]), "bi": int(batch["bi"][i]), "bj": int(batch["bj"][i])}
            for i in range(n)
        ]


def drain(
    finished: Iterator[list[dict]],
    ledger: TileLedger,
    total: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Record every finished block in the ledger as it arrives; returns how many."""
    done = 0
    for rows in finished:
        ledger.record((r["time"], r["bi"], r["bj"]) for r in rows)
        done += len(rows)
        if progress:
            progress(done, total)
    if done != total:
        raise RuntimeError(f"pipeline finished {done} blocks, expected {total}")
    return done
