"""Inference over a region: what ``jobs/infer_region.py`` and ``jobs/monitor.py`` run.

A region is one or more zone stores (``store``'s layout). ``infer_region`` makes them:
search S1, print the plan, create (or resume) each zone's store in ``<out>.partial``, fill
it, rename it into place. ``monitor_region`` appends the acquisitions a finished mosaic
lacks. Both hand their zones to ``run_zones`` (fill, mark complete, publish), which fills a
zone with ``fill_zone``: tasks are the blocks that meet the AOI and the acquisition's
footprint, minus those in the ledger; the pipeline writes chunks; the driver appends the
ledger. Nothing here holds more than one zone's task list (a few ints per block).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from sar2opt.config import Config, check_infer, config_to_dict
from sar2opt.cube.build import cloudy_items, prior_items, search_dem
from sar2opt.data.inputs import input_keys
from sar2opt.errors import CatalogError, ConfigError, first_line
from sar2opt.grid import GridSpec
from sar2opt.infer import store as st
from sar2opt.infer.ledger import StoreLock, TileLedger
from sar2opt.infer.monitor import (
    period_search_start,
    periods_to_do,
    search_start,
    store_config,
    times_to_do,
    until_day,
)
from sar2opt.infer.periods import (
    DAY,
    PeriodError,
    TimeSteps,
    assign,
    obs_seconds,
    parse_period,
    periods_between,
    provisional,
)
from sar2opt.infer.plan import BlockLattice, RunPlan, estimate_dates, format_plan, make_plan
from sar2opt.infer.predictor import Models, TilePredictor, load_models
from sar2opt.infer.publish import publish_store
from sar2opt.infer.read import CatalogAux, CatalogSar
from sar2opt.infer.run import (
    ActorPool,
    CompositeSpec,
    FillJob,
    Strip,
    block_tasks,
    drain,
    run_local,
    run_ray,
    strip_tasks,
)
from sar2opt.profiles import profile_for
from sar2opt.provenance import provenance
from sar2opt.runtime import init_ray
from sar2opt.stac import footprint, search_aoi, search_s1, search_s2_near, shift_day
from sar2opt.zones import ZonePart, blocks_by_row, split_zones, to_grid_crs

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def check_bands(cfg: Config, models: Models) -> None:
    """The checkpoints read SAR bands the catalog config gives and, with the S2 composite on,
    predict optical bands it gives: else every block would fail (fail before any output)."""
    cat, ck = cfg.catalog, models.checkpoints[0]
    if not set(models.in_bands) <= set(cat.sar_bands):
        raise ConfigError(
            f"checkpoint {ck} was trained on SAR bands {list(models.in_bands)} but the catalog "
            f"config gives {list(cat.sar_bands)} (catalog.sar_bands)"
        )
    if cfg.infer.composite_max_dt_days > 0 and not set(models.out_bands) <= set(cat.opt_bands):
        raise ConfigError(
            f"checkpoint {ck} predicts {list(models.out_bands)} but the catalog config's optical "
            f"bands are {list(cat.opt_bands)} (catalog.opt_bands): the S2 composite needs them"
        )


def check_inputs(cfg: Config, models: Models) -> None:
    """The catalog config can supply every input of the checkpoints' input set (a DEM: a DEM
    collection; a prior or the same-date cloudy S2: an S2 collection with the bands it
    predicts), else stop before any output with one line naming what is missing."""
    cat, ck, input_set = cfg.catalog, models.checkpoints[0], models.input_set
    keys = input_keys(input_set)
    if "dem" in keys and not cat.dem_collection:
        raise ConfigError(
            f"checkpoint {ck} was trained on input set {input_set}, which reads a DEM, but the "
            "catalog config names no DEM collection (set catalog.dem_collection, e.g. "
            "cop-dem-glo-30)"
        )
    for key, what in (("cloudy", "the same-date cloudy"), ("prior", "the prior clear")):
        if key not in keys:
            continue
        if not cat.s2_collection:
            raise ConfigError(
                f"checkpoint {ck} was trained on input set {input_set}, which reads {what} "
                "Sentinel-2, but the catalog config names no S2 collection "
                "(catalog.s2_collection)"
            )
        if not set(models.out_bands) <= set(cat.opt_bands):
            name = "a prior" if key == "prior" else "a same-date S2"
            raise ConfigError(
                f"checkpoint {ck} reads {name} of {list(models.out_bands)} but the catalog "
                f"config's optical bands are {list(cat.opt_bands)} (catalog.opt_bands)"
            )


@dataclass(frozen=True)
class AuxItems:
    """What a run of an input set beyond S reads besides S1 and the composite's S2: the S2
    items the priors and the same-date cloudy S2 can come from and the DEM items (none for
    what the input set does not read)."""

    prior_s2: tuple[dict, ...] = ()
    dem: tuple[dict, ...] = ()
    cloudy_s2: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Region:
    """What every run over an AOI needs: the config, the AOI, its zone parts, the models."""

    cfg: Config
    aoi: BaseGeometry
    parts: tuple[ZonePart, ...]
    models: Models

    @classmethod
    def open(cls, cfg: Config, aoi_path: str | Path, checkpoints: Sequence[str | Path]) -> Region:
        """Check the settings, read the AOI and the checkpoints' metadata (fail fast)."""
        from sar2opt.aoi import load_aoi

        check_infer(cfg.infer)  # configs read back from a store skip load_config's checks
        aoi = load_aoi(aoi_path)
        models = load_models(checkpoints)
        check_bands(cfg, models)
        check_inputs(cfg, models)
        return cls(cfg, aoi, tuple(split_zones(aoi, cfg.cube.res_m, cfg.cube.epsg)), models)

    def settings(self, part: ZonePart) -> dict:
        """What a zone store's pixels depend on besides the dates (``store.same_run``)."""
        spec = self.cfg.infer
        return {
            "grid": part.grid.to_dict(),
            "tile_px": spec.tile_px,
            "overlap_px": spec.overlap_px,
            "sha256": list(self.models.sha256),
            "flips": spec.tta_flips,
            "composite_max_dt_days": spec.composite_max_dt_days,
            "period": str(self.steps.spec or "acquisition"),
            "out_bands": list(self.models.out_bands),
        }

    @property
    def steps(self) -> TimeSteps:
        """What a time step of this run's stores is (an acquisition or a period)."""
        spec = self.cfg.infer
        return TimeSteps(parse_period(spec.period, spec.period_edges))

    def s2_items(self, start: str, end: str) -> list[dict]:
        """S2 items that can replace the synthesis from ``start`` to ``end`` (none when the
        composite is off)."""
        c = self.cfg
        return search_s2_near(c.catalog, self.aoi, start, end, c.infer.composite_max_dt_days)

    def aux_items(self, start: str, end: str) -> AuxItems:
        """The prior's S2 items (from ``max_dt_days + prior_days`` before ``start``), the
        same-date S2 items (±``max_dt_days`` around ``start``..``end``; one search for both)
        and the DEM items over the AOI, as the input set needs: a ``CatalogError`` naming
        the DEM collection when none covers the AOI (before any output)."""
        cat, models = self.cfg.catalog, self.models
        keys, rule = input_keys(models.input_set), models.rule
        s2: list[dict] = []
        if "prior" in keys or "cloudy" in keys:
            back = rule.max_dt_days + (rule.prior_days if "prior" in keys else 0)
            ahead = rule.max_dt_days if "cloudy" in keys else 0
            s2 = search_aoi(
                cat, cat.s2_collection, self.aoi, shift_day(start, -back), shift_day(end, ahead)
            )
        dem: list[dict] = []
        if "dem" in keys:
            why = f"checkpoint {models.checkpoints[0]} (input set {models.input_set}) reads a DEM"
            dem = search_dem(cat, self.aoi, needed_by=why)
        return AuxItems(
            tuple(s2) if "prior" in keys else (),
            tuple(dem),
            tuple(s2) if "cloudy" in keys else (),
        )


#: One S1 acquisition: its ISO time and its frames (STAC items).
Acquisition = tuple[str, tuple[dict, ...]]


@dataclass(frozen=True)
class ZoneRun:
    """One zone store's share of a run: fill time steps ``t_indices`` of its time axis
    ``times``, each from its S1 ``acquisitions`` (one per step, or a period's: the best
    evidence per pixel wins), then set ``done``. ``steps`` says what a time step is."""

    part: ZonePart
    store: Path
    times: tuple[str, ...]
    t_indices: tuple[int, ...]
    acquisitions: tuple[tuple[Acquisition, ...], ...]
    done: Mapping = field(default_factory=lambda: {st.COMPLETE_ATTR: True})
    steps: TimeSteps = field(default_factory=lambda: TimeSteps(None))


def fill_zone(
    region: Region,
    zone: ZoneRun,
    s2_items: Sequence[dict],
    *,
    aux_items: AuxItems = AuxItems(),
    executor: str = "ray",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write the missing blocks of the zone's time steps; (blocks written, blocks total)."""
    cfg, models, part = region.cfg, region.models, zone.part
    spec = cfg.infer
    lat = BlockLattice(part.grid, spec.tile_px, spec.overlap_px)
    flat: list[Acquisition] = []  # every acquisition of the run; sar.read takes its index
    of_t: dict[int, tuple[int, ...]] = {}  # the acquisitions of each time step to fill
    for t, acqs in zip(zone.t_indices, zone.acquisitions, strict=True):
        of_t[t] = tuple(range(len(flat), len(flat) + len(acqs)))
        flat += acqs

    def blocks_for_t(t: int):
        fp = footprint([frame for a in of_t[t] for frame in flat[a][1]])
        geom = part.aoi if fp is None else part.aoi.intersection(fp)
        return blocks_by_row(lat, to_grid_crs(geom, part.epsg)) if not geom.is_empty else []

    ledger = TileLedger(zone.store)
    k = st.shard_blocks(zone.store)  # a shard with a block to do is done again whole
    keys = zone.steps.ledger_keys(zone.times, zone.t_indices, zone.acquisitions)
    blocks = block_tasks(keys, zone.t_indices, blocks_for_t, ledger.done(), k)
    total = len(blocks)
    strips = store_strips(zone.store, blocks, spec.read_blocks)
    del blocks
    if not strips:
        return 0, 0
    composite, s2_by_time = None, ()
    if spec.composite_max_dt_days > 0:
        composite = CompositeSpec(
            spec.composite_max_dt_days,
            tuple(cfg.catalog.opt_bands),
            cfg.cube,  # the cube's cloud rule
            profile_for(cfg.catalog.stac_url, cfg.catalog.s2_collection),
        )
        s2_by_time = tuple(
            tuple(zone.steps.s2_items(s2_items, zone.times[t], spec.composite_max_dt_days))
            if t in of_t
            else ()
            for t in range(len(zone.times))
        )
    sar = CatalogSar(
        part.grid,
        tuple(frames for _, frames in flat),
        models.in_bands,
        profile_for(cfg.catalog.stac_url, cfg.catalog.s1_collection),
    )
    job = FillJob(
        str(zone.store), lat, sar, spec.batch_size, models.out_bands, s2_by_time, composite,
        acquisitions=tuple(of_t.get(t, ()) for t in range(len(zone.times))),
        acquisition_seconds=tuple(obs_seconds(iso) for iso, _ in flat),
        reference_seconds=tuple(zone.steps.reference_seconds(iso) for iso in zone.times),
        s2_max_dt_days=zone.steps.s2_max_dt_days,
        aux=aux_source(region, part.grid, flat, aux_items),
        blend_reference=models.model.get("reference") == "scene_fit",
    )  # fmt: skip
    device = "cuda" if spec.gpus_per_actor > 0 else "cpu"
    make_predictor = functools.partial(
        TilePredictor, list(models.checkpoints), device, spec.tta_flips
    )
    if executor == "local":
        finished = run_local(strips, job, make_predictor)
    else:
        pool = ActorPool(
            spec.num_actors, spec.cpus_per_actor, spec.gpus_per_actor, spec.calls_per_actor,
            tuple(sorted(spec.actor_resources.items())),
        )  # fmt: skip
        finished = run_ray(strips, job, make_predictor, pool)
    return drain(finished, ledger, total, progress), total


def aux_source(
    region: Region, grid: GridSpec, acquisitions: Sequence[Acquisition], items: AuxItems
) -> CatalogAux | None:
    """The reader of the same-date S2, prior and DEM of each acquisition (the index
    ``sar.read`` takes; None for S models): an acquisition's same-date S2 from the S2 items
    within ±``max_dt_days`` of it, its prior from those in its window before it, by the
    training cube's rule."""
    cfg, models = region.cfg, region.models
    keys = tuple(k for k in input_keys(models.input_set) if k != "sar")
    if not keys:
        return None
    cat, rule = cfg.catalog, models.rule
    times = tuple(iso for iso, _ in acquisitions)
    return CatalogAux(
        grid,
        keys,
        times=times,
        opt_bands=tuple(models.out_bands),
        rule=rule,
        prior_items_by_time=tuple(
            tuple(prior_items(items.prior_s2, iso, rule)) if "prior" in keys else ()
            for iso in times
        ),
        s2_profile=(
            profile_for(cat.stac_url, cat.s2_collection)
            if {"prior", "cloudy"} & set(keys)
            else None
        ),
        dem_items=items.dem,
        dem_profile=profile_for(cat.stac_url, cat.dem_collection) if "dem" in keys else None,
        cloudy_items_by_time=tuple(
            tuple(cloudy_items(items.cloudy_s2, iso, rule)) if "cloudy" in keys else ()
            for iso in times
        ),
    )


def store_strips(store: Path, blocks: Sequence, read_blocks: int) -> list[Strip]:
    """``strip_tasks`` for ``store``: one task per shard, at the width the store was created
    with (``read_blocks`` may have changed since: a narrower strip would give a shard two
    writers); a store without shards takes strips of ``read_blocks``."""
    k = st.shard_blocks(store)
    return strip_tasks(blocks, k if k > 1 else read_blocks)


def run_zones(
    region: Region,
    zones: Sequence[ZoneRun],
    s2_items: Sequence[dict],
    *,
    aux_items: AuxItems = AuxItems(),
    executor: str = "ray",
    name: str = "infer",
    log: Log = _print,
) -> None:
    """Fill each zone (on Ray, started here if it is not up, or ``executor="local"``), then
    record it done (``ZoneRun.done``) and publish its STAC items."""
    t0 = time.monotonic()
    for zone in zones:
        if executor == "ray":
            init_ray()
        last = [0.0]

        def progress(done: int, total: int, zn: str = zone.part.name, last=last) -> None:
            now = time.monotonic()
            if now - last[0] >= 5 or done == total:
                last[0] = now
                log(f"{name}: zone {zn} tiles {done}/{total}  ({now - t0:.0f} s)")

        wrote, _ = fill_zone(
            region, zone, s2_items, aux_items=aux_items, executor=executor, progress=progress
        )
        log(f"{name}: zone {zone.part.name} wrote {wrote} tiles")
        st.update_attrs(zone.store, zone.done)
        publish_store(zone.store, zone.part.aoi)


def log_inputs(region: Region, items: AuxItems, log: Log) -> None:
    """One line on what a run reads besides SAR (nothing for S)."""
    m, cat = region.models, region.cfg.catalog
    what = []
    if "cloudy" in input_keys(m.input_set):
        what.append(
            f"same-date S2 = nearest S2 within ±{m.rule.max_dt_days:g} d of each date with its "
            f"cloud mask ({len(items.cloudy_s2)} {cat.s2_collection} items)"
        )
    if "prior" in input_keys(m.input_set):
        what.append(
            f"prior = latest clear S2 {m.rule.max_dt_days:g}-"
            f"{m.rule.max_dt_days + m.rule.prior_days:g} d before each date "
            f"({len(items.prior_s2)} {cat.s2_collection} items)"
        )
    if "dem" in input_keys(m.input_set):
        what.append(f"DEM = {len(items.dem)} {cat.dem_collection} items")
    if what:
        log(f"inputs: {m.input_set}: SAR, {', '.join(what)}")


# ---------------------------------------------------------------------------------------------
# the two flows


def plan_region(
    region: Region, start: str, end: str
) -> tuple[RunPlan, list[tuple[str, list[dict]]] | None]:
    """The dry-run plan and the S1 acquisitions (ISO time, frames) it counted; when the
    catalog cannot be searched the dates are estimated and the acquisitions are None."""
    from sar2opt.cube.load import group_acquisitions

    cfg, models = region.cfg, region.models
    spec = cfg.infer
    try:
        groups = group_acquisitions(search_s1(cfg.catalog, region.aoi, start, end))
        n_dates, note = len(groups), f"S1 acquisitions found in {cfg.catalog.stac_url}"
    except CatalogError as e:
        groups, n_dates = None, estimate_dates(start, end, spec.s1_revisit_days)
        note = f"estimated, one per {spec.s1_revisit_days:g} days: {first_line(e)[:80]}"
    comp = spec.composite_max_dt_days
    steps = region.steps
    periods = periods_between(steps.spec, start, end) if steps.spec is not None else []
    plan = make_plan(
        list(region.parts),
        tile_px=spec.tile_px,
        overlap_px=spec.overlap_px,
        dates=n_dates,
        dates_note=note,
        sar_bands=len(models.in_bands),
        out_bands=len(models.out_bands),
        hypotheses=len(models.checkpoints) * spec.tta_flips,
        s2_per_date=(2 * comp / spec.s2_revisit_days) if comp > 0 else 0.0,
        opt_in_bands=len(cfg.catalog.opt_bands),
        gpu_tiles_per_s=spec.gpu_tiles_per_s,
        periods=len(periods),
        period_note=str(steps.spec or ""),
    )
    return plan, groups


def time_steps(
    steps: TimeSteps, groups: Sequence[tuple[str, list[dict]]], start: str, end: str, log: Log
) -> tuple[list[str], tuple[tuple[Acquisition, ...], ...]]:
    """The store's time axis and each step's acquisitions: one step per acquisition, or one
    per period of ``steps`` from ``start`` to ``end`` (an empty one is written as no data and
    said here; none with an acquisition is an error)."""
    acqs = [(iso, tuple(members)) for iso, members in groups]
    if steps.spec is None:
        return [iso for iso, _ in acqs], tuple((a,) for a in acqs)
    periods = periods_between(steps.spec, start, end)
    inside = assign([iso for iso, _ in acqs], periods)
    if not any(inside):
        raise PeriodError(
            f"no Sentinel-1 acquisition from {start} to {end} falls in a period of "
            f"{steps.spec}: nothing to write"
        )
    counts = ", ".join(str(len(i)) for i in inside)
    log(
        f"infer: {len(periods)} period(s) of {steps.spec} from {periods[0].start} to "
        f"{periods[-1].end - DAY}; S1 acquisitions per period: {counts}"
    )
    for p, ix in zip(periods, inside, strict=True):
        if not ix:
            log(f"infer: period {p.start} has no Sentinel-1 acquisition: written as no data")
    per_step = tuple(tuple(acqs[i] for i in ix) for ix in inside)
    return [p.label for p in periods], per_step


def provisional_labels(steps: TimeSteps, times: Sequence[str], searched_until: str) -> list[str]:
    """The time steps that may still gain acquisitions (periods not over by the last day
    searched): the monitor refreshes them."""
    if steps.spec is None:
        return []
    return [t for t in times if provisional(steps.period(t), searched_until)]


def infer_region(
    region: Region,
    out: Path,
    start: str,
    end: str,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    executor: str = "ray",
    log: Log = _print,
) -> list[Path]:
    """Predict every S1 acquisition from ``start`` to ``end`` into the mosaic ``out``
    (``store``'s layout); its zone stores. ``dry_run``: print the plan only."""
    t0 = time.monotonic()
    cfg, models = region.cfg, region.models
    steps = region.steps
    first = steps.search_from(start, end)  # a period mosaic fills whole periods
    plan, groups = plan_region(region, first, end)
    log(format_plan(plan))
    if dry_run:
        return []
    if groups is None:  # the plan could not search: now it is an error
        search_s1(cfg.catalog, region.aoi, first, end)
    times, per_step = time_steps(steps, groups, start, end, log)
    aux_items = region.aux_items(first, end)  # a missing DEM stops the run here
    log_inputs(region, aux_items, log)
    s2_items = region.s2_items(first, end)
    attrs = provenance("infer")
    attrs.update(
        {
            "model": models.model,
            "checkpoint": models.checkpoints[0],
            "checkpoints": list(models.checkpoints),
            st.CHECKPOINT_SHA256_ATTR: models.sha256[0],
            "checkpoints_sha256": list(models.sha256),
            "checkpoint_git_sha": models.git_sha,
            st.CONFIG_ATTR: config_to_dict(cfg),
            "in_bands": list(models.in_bands),
            st.S1_IDS_ATTR: [[it["id"] for _, fr in acqs for it in fr] for acqs in per_step],
            st.PERIOD_ATTR: str(steps.spec or "acquisition"),
            st.PROVISIONAL_ATTR: provisional_labels(steps, times, end),
            "start": start,
            st.END_ATTR: end,
            "hypotheses": len(models.checkpoints) * cfg.infer.tta_flips,
            "tta_flips": cfg.infer.tta_flips,
            # the ``uncertainty`` band: the checkpoint's calibrated |error|, or the raw spread
            "uncertainty_calibration": models.uncertainty_calibration(cfg.infer.tta_flips),
            st.COMPLETE_ATTR: False,
        }
    )
    settings = [region.settings(p) for p in region.parts]
    with StoreLock(out):  # the same lock as monitor_region: one writer per output
        names = [p.name for p in region.parts]
        stores = st.open_work(out, names, settings, times, overwrite)
        for part, store, zs in zip(region.parts, stores, settings, strict=True):
            if store.exists():
                log(f"infer: resuming {store}")
                continue
            zattrs = {**attrs, **st.run_attrs(zs), st.ZONE_ATTR: part.name}
            zattrs["aoi_bounds_lonlat"] = list(part.aoi.bounds)
            st.create_store(
                store, part.grid, times, models.out_bands, zattrs, plan.block_px,
                shard_blocks=cfg.infer.read_blocks,
            )  # fmt: skip
        every = tuple(range(len(times)))
        zones = [
            ZoneRun(part, store, tuple(times), every, per_step, steps=steps)
            for part, store in zip(region.parts, stores, strict=True)
        ]
        run_zones(
            region, zones, s2_items, aux_items=aux_items, executor=executor, name="infer", log=log
        )
        st.finish(out)
    final = st.zone_paths(out, names)
    for store in final:
        log(f"mosaic: {store}  {st.describe(store)}  ({time.monotonic() - t0:.0f} s)")
    return final


def match_parts(region: Region, stores: Sequence[Path], attrs: Sequence[Mapping]) -> list[ZonePart]:
    """The zone part of each store; a ConfigError naming what differs from the store's run."""
    parts = region.parts
    by_name = {p.name: p for p in parts}
    out = []
    for store, a in zip(stores, attrs, strict=True):
        part = parts[0] if len(parts) == len(stores) == 1 else by_name.get(a.get(st.ZONE_ATTR, ""))
        if part is None or len(parts) != len(stores):
            where = store.parent if len(stores) > 1 else store
            raise ConfigError(
                f"the AOI splits into zones {sorted(by_name)} but {where} holds other zones: "
                "pass the AOI the store was made for"
            )
        settings = region.settings(part)
        if not st.same_run(a, settings):
            what = st.settings_diff(a, settings)
            raise ConfigError(
                f"{store} was made with other "
                + (", ".join(what) if what else "settings (AOI, grid, checkpoints, tiles)")
                + ": pass the AOI, --checkpoint and settings of the run that made it"
            )
        out.append(part)
    return out


def monitor_region(
    root: Path,
    aoi_path: str | Path,
    checkpoints: Sequence[str | Path],
    *,
    until: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    executor: str = "ray",
    log: Log = _print,
) -> list[Path]:
    """Append the S1 acquisitions after the last time step of the mosaic at ``root`` (up to
    ``until``, default today) and fill them; the stores that grew. The run repeats the
    settings the store recorded (``config_path``/``overrides`` replace them, but what the
    pixels depend on must match)."""
    t0 = time.monotonic()
    stores = st.zone_stores(root)
    until = until_day(until)
    with StoreLock(root):  # the same lock as infer_region's output
        attrs = [st.read_attrs(s) for s in stores]
        cfg = store_config(attrs[0].get(st.CONFIG_ATTR) or {}, config_path, overrides)
        region = Region.open(cfg, aoi_path, checkpoints)
        parts = match_parts(region, stores, attrs)
        steps = region.steps
        if steps.spec is None:  # one time step per acquisition: append the new ones
            since = search_start(attrs)
            found = _acquisitions(region, since[:10], until)
            plans = []
            for a in attrs:
                todo, to_append = times_to_do(
                    list(found), a[st.TIMES_ATTR], a.get(st.PENDING_ATTR) or []
                )
                plans.append((todo, to_append, {t: [t] for t in todo}))
            gone = sorted({t for todo, _, _ in plans for t in todo if t not in found})
            if gone:
                raise CatalogError(
                    f"time step {gone[0]} of an unfinished monitor run is no longer in "
                    f"{cfg.catalog.stac_url}"
                )
        else:  # periods: refresh the open ones that gained passes, append the new ones
            since = period_search_start(steps, attrs)
            found = _acquisitions(region, since, until)
            plans = [periods_to_do(steps, found, a, since, until) for a in attrs]
        if not any(todo for todo, _, _ in plans):
            for store, a in zip(stores, attrs, strict=True):  # open periods may have closed
                still = provisional_labels(steps, a[st.TIMES_ATTR], until)
                if still != list(a.get(st.PROVISIONAL_ATTR) or []):
                    st.update_attrs(store, {st.PROVISIONAL_ATTR: still})
            log(
                f"monitor: up to date: no new Sentinel-1 acquisition after {since} "
                f"until {until} in {cfg.catalog.stac_url}"
            )
            return []
        aux_items = region.aux_items(since[:10], until)
        log_inputs(region, aux_items, log)
        s2_items = region.s2_items(since[:10], until)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        zones = []
        for part, store, a, (todo, to_append, acqs) in zip(
            parts, stores, attrs, plans, strict=True
        ):
            if not todo:
                continue
            log(f"monitor: zone {part.name} time steps to do: {', '.join(todo)}")
            st.update_attrs(store, {st.PENDING_ATTR: todo, st.COMPLETE_ATTR: False})
            ids_of = {t: [it["id"] for iso in acqs[t] for it in found[iso]] for t in todo}
            ids = list(a.get(st.S1_IDS_ATTR) or [])
            if to_append:
                ids += [ids_of[t] for t in to_append]
                st.append_times(store, to_append, {st.S1_IDS_ATTR: ids})
            times = st.read_attrs(store)[st.TIMES_ATTR]
            for t in todo:  # a refreshed period is made from its new frames (pending guards it)
                ids[times.index(t)] = ids_of[t]
            st.update_attrs(store, {st.S1_IDS_ATTR: ids})
            done = {
                st.PENDING_ATTR: [],
                st.COMPLETE_ATTR: True,
                st.END_ATTR: max(str(a.get(st.END_ATTR, "")), until),
                st.PROVISIONAL_ATTR: provisional_labels(steps, times, until),
                "monitored_utc": now,
            }
            zones.append(
                ZoneRun(
                    part,
                    store,
                    tuple(times),
                    tuple(times.index(t) for t in todo),
                    tuple(tuple((iso, tuple(found[iso])) for iso in acqs[t]) for t in todo),
                    done,
                    steps,
                )
            )
        run_zones(
            region, zones, s2_items, aux_items=aux_items, executor=executor, name="monitor",
            log=log,
        )  # fmt: skip
    for zone in zones:
        n = len(st.read_attrs(zone.store)[st.TIMES_ATTR])
        what = "appended" if zone.steps.spec is None else "filled"  # periods: also refreshed
        log(
            f"mosaic: {zone.store}  {what} {len(zone.t_indices)} time step(s), {n} in all  "
            f"({time.monotonic() - t0:.0f} s)"
        )
    return [z.store for z in zones]


def _acquisitions(region: Region, start: str, end: str) -> dict[str, list[dict]]:
    """S1 acquisitions (ISO time of the pass -> its frames) over the AOI, none when none."""
    from sar2opt.cube.load import group_acquisitions

    if start > end:
        return {}
    items = search_s1(region.cfg.catalog, region.aoi, start, end, required=False)
    return dict(group_acquisitions(items))
