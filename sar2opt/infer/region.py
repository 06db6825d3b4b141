"""Orchestration shared by ``jobs/infer_region.py`` and ``jobs/monitor.py``.

A region is one or more ``ZonePart`` stores. ``fill_zone`` fills given time steps of one
store: tasks are the blocks that meet the AOI and the acquisition's footprint, minus those in
the ledger; the pipeline writes chunks; the driver appends the ledger. Nothing here holds
more than one zone's task list (a few ints per block).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from sar2opt.config import Config, InferSpec
from sar2opt.errors import ConfigError, Sar2OptError
from sar2opt.infer.ledger import TileLedger
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor
from sar2opt.infer.run import (
    CompositeSpec,
    block_tasks,
    drain,
    finish_block_rows,
    read_sar_strip,
    run_local,
    run_ray,
    strip_tasks,
)
from sar2opt.infer.store import shard_blocks
from sar2opt.profiles import profile_for
from sar2opt.runtime import init_ray
from sar2opt.zones import ZonePart, blocks_by_row, to_grid_crs

__all__ = ["init_ray"]  # re-exported: the jobs start Ray through this module

#: Attribute saying a store holds every block of every time step it lists.
COMPLETE_ATTR = "sar2opt_complete"
#: Model input sets the inference reads (SAR only: no DEM or prior is read per block yet).
INFER_INPUT_SETS: tuple[str, ...] = ("S",)
#: Time steps appended by the monitor whose blocks are not all written yet.
PENDING_ATTR = "pending_times"


@dataclass(frozen=True)
class Models:
    """The checkpoints of the ensemble and what they agree on."""

    checkpoints: tuple[str, ...]
    sha256: tuple[str, ...]
    in_bands: tuple[str, ...]
    out_bands: tuple[str, ...]
    model: dict
    git_sha: str | None


def load_models(checkpoints: Sequence[str | Path]) -> Models:
    """Load every checkpoint once (fail fast on a bad one) and check they share bands."""
    from sar2opt.infer.mosaic import sha256_file
    from sar2opt.train.checkpoint import MODEL_FILE, load_generator

    metas = []
    for c in checkpoints:
        _, meta = load_generator(c)
        input_set = meta.get("input_set") or (meta.get("model") or {}).get("input_set") or "S"
        if input_set not in INFER_INPUT_SETS:
            raise ConfigError(
                f"checkpoint {c} was trained on input set {input_set}; inference supports "
                f"{', '.join(INFER_INPUT_SETS)} (SAR only) for now"
            )
        metas.append(meta)
    m0 = metas[0]
    for c, m in zip(checkpoints, metas, strict=True):
        if list(m["in_bands"]) != list(m0["in_bands"]) or list(m["out_bands"]) != list(
            m0["out_bands"]
        ):
            raise ConfigError(f"checkpoint {c} has other bands than {checkpoints[0]}")
    return Models(
        tuple(str(Path(c).resolve()) for c in checkpoints),
        tuple(sha256_file(Path(c) / MODEL_FILE) for c in checkpoints),
        tuple(m0["in_bands"]),
        tuple(m0["out_bands"]),
        dict(m0.get("model") or {}),
        m0.get("git_sha"),
    )


def footprint(items: Sequence[dict]) -> BaseGeometry | None:
    """Union of the items' footprints (lon/lat); None when an item has no geometry."""
    geoms = [it.get("geometry") for it in items]
    if any(g is None for g in geoms):
        return None
    return unary_union([shape(g) for g in geoms])


def s2_near(s2_items: Sequence[dict], iso: str, max_dt_days: float) -> list[dict]:
    """S2 items within ±``max_dt_days`` of ``iso``."""
    import pandas as pd

    t0 = pd.Timestamp(iso)
    out = []
    for it in s2_items:
        dt = abs((pd.Timestamp(it["properties"]["datetime"]) - t0) / pd.Timedelta(days=1))
        if dt <= max_dt_days:
            out.append(it)
    return out


def run_settings(part: ZonePart, cfg: Config, models: Models, flips: int) -> dict:
    """The settings a store's pixels depend on (besides the dates): ``run_fingerprint``'s input."""
    return {
        "grid": part.grid.to_dict(),
        "tile_px": cfg.infer.tile_px,
        "overlap_px": cfg.infer.overlap_px,
        "sha256": list(models.sha256),
        "flips": flips,
        "composite_max_dt_days": cfg.infer.composite_max_dt_days,
        "out_bands": list(models.out_bands),
    }


def run_fingerprint(part: ZonePart, cfg: Config, models: Models, flips: int) -> str:
    """What must match for a partial store to be resumed (not the dates: the monitor adds)."""
    doc = run_settings(part, cfg, models, flips)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def settings_diff(old: dict, new: dict) -> list[str]:
    """Keys of ``run_settings`` whose values differ (for an error that says what)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# ---------------------------------------------------------------------------------------------
# what both jobs (infer_region, monitor) do around the pipeline


def check_infer_spec(spec: InferSpec) -> None:
    """Reject tiling/actor settings that would crash or hang deep inside Ray."""
    from sar2opt.infer.tiles import MULTIPLE

    if spec.tile_px <= 0 or spec.tile_px % MULTIPLE:
        raise ConfigError(
            f"infer.tile_px must be a positive multiple of {MULTIPLE}, got {spec.tile_px}"
        )
    if not 0 <= spec.overlap_px < spec.tile_px:
        raise ConfigError(f"infer.overlap_px must be in [0, tile_px), got {spec.overlap_px}")
    if min(spec.batch_size, spec.num_actors, spec.read_blocks, spec.calls_per_actor) < 1:
        raise ConfigError(
            "infer.batch_size, infer.num_actors, infer.read_blocks and infer.calls_per_actor "
            "must be >= 1"
        )
    if spec.cpus_per_actor < 0 or spec.gpus_per_actor < 0:
        raise ConfigError("infer.cpus_per_actor and infer.gpus_per_actor must be >= 0")


def with_stac_url(cfg: Config, stac_url: str | None) -> Config:
    """``cfg`` with ``catalog.stac_url`` replaced when ``stac_url`` is given."""
    if not stac_url:
        return cfg
    return dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, stac_url=stac_url))


def shift_day(day: str, days: float) -> str:
    """``day`` (YYYY-MM-DD...) moved by ``days``, rounded away from zero to whole days."""
    d = dt.date.fromisoformat(day[:10]) + dt.timedelta(
        days=math.copysign(math.ceil(abs(days)), days)
    )
    return d.isoformat()


def user_error(exc: BaseException) -> Sar2OptError | None:
    """The Sar2OptError behind a Ray wrapper (worker errors arrive as causes/subclasses)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError: the worker's original exception
        if isinstance(cause, BaseException) and id(cause) not in seen:
            e = cause
            continue
        if isinstance(e, Sar2OptError):
            return e
        e = e.__cause__ or e.__context__
    return None


def add_infer_args(p: argparse.ArgumentParser, *, aoi_help: str, checkpoint_help: str) -> None:
    """The arguments ``jobs/infer_region.py`` and ``jobs/monitor.py`` share (same names,
    same meaning): AOI, checkpoints, config, overrides, catalog URL, executor."""
    p.add_argument("--aoi", required=True, help=aoi_help)
    p.add_argument("--checkpoint", required=True, action="append", help=checkpoint_help)
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--stac-url", help="STAC API endpoint (overrides catalog.stac_url)")
    p.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray Data actor pool (default); local: in this process (tiny AOIs, tests)",
    )


def search_composite_s2(cfg: Config, aoi: BaseGeometry, start: str, end: str) -> list[dict]:
    """S2 items that can replace the synthesis from ``start`` to ``end`` (the composite
    window wider on both sides); none when the composite is off."""
    comp = cfg.infer.composite_max_dt_days
    if comp <= 0:
        return []
    from sar2opt.stac import search_aoi

    return search_aoi(
        cfg.catalog,
        cfg.catalog.s2_collection,
        aoi,
        shift_day(start, -comp),
        shift_day(end, comp),
    )


def one_line(err: BaseException) -> str:
    """First line of the message: Ray appends retry notes to errors raised in workers."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def store_strips(store: Path, blocks: Sequence[dict], read_blocks: int) -> list[dict]:
    """``strip_tasks`` for ``store``: one task per shard, at the width the store was created
    with (``read_blocks`` may have changed since: a narrower strip would give a shard two
    writers); a store without shards takes strips of ``read_blocks``."""
    k = shard_blocks(store)
    return strip_tasks(blocks, k if k > 1 else read_blocks)


def fill_zone(
    store: Path,
    part: ZonePart,
    cfg: Config,
    models: Models,
    times: Sequence[str],
    t_indices: Sequence[int],
    s1_groups: Sequence[Sequence[dict]],
    s2_items: Sequence[dict],
    *,
    executor: str = "ray",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write the missing blocks of time steps ``t_indices``; (blocks written, blocks total).

    ``s1_groups[k]`` are the S1 items of ``times[t_indices[k]]``.
    """
    spec = cfg.infer
    lat = BlockLattice(part.grid, spec.tile_px, spec.overlap_px)
    aoi_lonlat = part.aoi
    ledger = TileLedger(store)
    group_of = dict(zip(t_indices, s1_groups, strict=True))

    def blocks_for_t(t: int):
        fp = footprint(group_of[t])
        geom = aoi_lonlat if fp is None else aoi_lonlat.intersection(fp)
        return blocks_by_row(lat, to_grid_crs(geom, part.epsg)) if not geom.is_empty else []

    done = ledger.done()
    blocks = block_tasks(times, t_indices, blocks_for_t, done)
    total = len(blocks)
    rows = store_strips(store, blocks, spec.read_blocks)
    del blocks
    items_by_time = [list(group_of.get(t, [])) for t in range(len(times))]
    comp = None
    s2_by_time: list[list[dict]] = [[] for _ in times]
    if spec.composite_max_dt_days > 0:
        c = cfg.cube
        comp = CompositeSpec(
            spec.composite_max_dt_days,
            tuple(cfg.catalog.opt_bands),
            c.cloud_brightness,
            c.cloud_whiteness,
            c.shadow_brightness,
            c.cloud_dilate_px,
            profile_for(cfg.catalog.stac_url, cfg.catalog.s2_collection),
        )
        s2_by_time = [
            s2_near(s2_items, times[t], spec.composite_max_dt_days) if t in group_of else []
            for t in range(len(times))
        ]
    read_kwargs = {
        "lattice": lat.to_dict(),
        "items_by_time": items_by_time,
        "bands": list(models.in_bands),
        "profile": profile_for(cfg.catalog.stac_url, cfg.catalog.s1_collection),
    }
    finish_kwargs = {
        "store": str(store),
        "lattice": lat.to_dict(),
        "s2_by_time": s2_by_time,
        "out_bands": list(models.out_bands),
        "composite": comp,
    }
    device = "cuda" if spec.gpus_per_actor > 0 else "cpu"
    if not rows:
        return 0, 0
    if executor == "local":
        finished = run_local(
            rows,
            batch_size=spec.batch_size,
            read_fn=read_sar_strip,
            read_kwargs=read_kwargs,
            predictor=TilePredictor(list(models.checkpoints), device, spec.tta_flips),
            finish_fn=finish_block_rows,
            finish_kwargs=finish_kwargs,
        )
    else:
        finished = run_ray(
            rows,
            batch_size=spec.batch_size,
            num_actors=spec.num_actors,
            cpus_per_actor=spec.cpus_per_actor,
            gpus_per_actor=spec.gpus_per_actor,
            read_fn=read_sar_strip,
            read_kwargs=read_kwargs,
            predictor_cls=TilePredictor,
            predictor_kwargs={
                "checkpoint_dir": list(models.checkpoints),
                "device": device,
                "flips": spec.tta_flips,
            },
            finish_fn=finish_block_rows,
            finish_kwargs=finish_kwargs,
            calls_per_actor=spec.calls_per_actor,
        )
    return drain(finished, ledger, total, progress), total
