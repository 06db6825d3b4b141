"""Append the Sentinel-1 acquisitions a mosaic store lacks: the scheduled monitoring run.

    python jobs/monitor.py --aoi examples/aoi/synthetic_para.geojson \
        --store out/mosaic.zarr --checkpoint out/train/checkpoint

Searches the catalog from the store's last time step to ``--until`` (default: today, UTC),
predicts only the acquisitions newer than that step, appends them to the store's time axis
and republishes its STAC items. Nothing new: prints ``monitor: up to date`` and exits 0, so
it can run on a schedule. The store must exist: ``jobs/infer_region.py`` makes it (and fixes
its grid, settings and first dates); the monitor repeats the settings the store recorded
(``--config``/``--set`` replace them, but what the pixels depend on must match). One writer
per store: a second run (or an infer_region on the same output) stops with one ``error:``
line, exit 2. A run killed half-way is finished by the next one (``pending_times`` + ledger).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sar2opt.aoi import load_aoi
from sar2opt.config import Config
from sar2opt.errors import CatalogError, ConfigError
from sar2opt.infer.ledger import StoreLock
from sar2opt.infer.monitor import search_start, store_config, times_to_do, zone_stores
from sar2opt.infer.publish import publish_store
from sar2opt.infer.region import (
    COMPLETE_ATTR,
    PENDING_ATTR,
    Models,
    add_infer_args,
    check_infer_spec,
    fill_zone,
    init_ray,
    load_models,
    one_line,
    run_fingerprint,
    run_settings,
    search_composite_s2,
    settings_diff,
    user_error,
    with_stac_url,
)
from sar2opt.infer.store import append_times, read_attrs, update_attrs
from sar2opt.paths import resolve_output
from sar2opt.zones import ZonePart, split_zones


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_infer_args(
        p,
        aoi_help="the GeoJSON the store was made for",
        checkpoint_help="checkpoint directory the store was made with; repeat for an ensemble",
    )
    p.add_argument("--store", required=True, help="mosaic made by jobs/infer_region.py --out")
    p.add_argument("--until", help="last date to search, YYYY-MM-DD (default: today, UTC)")
    return p.parse_args(argv)


def _until(arg: str | None) -> str:
    if arg is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(arg).isoformat()
    except ValueError:
        raise ConfigError(f"--until must be a date YYYY-MM-DD, got {arg!r}") from None


def match_parts(
    parts: Sequence[ZonePart],
    stores: Sequence[Path],
    attrs: Sequence[dict],
    cfg: Config,
    models: Models,
) -> list[ZonePart]:
    """The zone part of each store; a ConfigError naming what differs from the store's run."""
    by_name = {p.name: p for p in parts}
    out = []
    for store, a in zip(stores, attrs, strict=True):
        part = parts[0] if len(parts) == len(stores) == 1 else by_name.get(a.get("zone", ""))
        if part is None or len(parts) != len(stores):
            where = store.parent if len(stores) > 1 else store
            raise ConfigError(
                f"the AOI splits into zones {sorted(by_name)} but {where} holds other zones: "
                "pass the AOI the store was made for"
            )
        fp = run_fingerprint(part, cfg, models, cfg.infer.tta_flips)
        if a.get("run_fingerprint") != fp:
            now = run_settings(part, cfg, models, cfg.infer.tta_flips)
            what = settings_diff(a["run_settings"], now) if "run_settings" in a else []
            raise ConfigError(
                f"{store} was made with other "
                + (", ".join(what) if what else "settings (AOI, grid, checkpoints, tiles)")
                + ": pass the AOI, --checkpoint and settings of the run that made it"
            )
        out.append(part)
    return out


def main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    started_ray = False
    appended: list[tuple[Path, list[str]]] = []
    try:
        root = resolve_output(args.store)  # inside $SAR2OPT_OUTPUT_ROOT when set
        stores = zone_stores(root)
        until = _until(args.until)
        with StoreLock(root):  # the same lock as jobs/infer_region.py --out
            attrs = [read_attrs(s) for s in stores]
            cfg = store_config(attrs[0].get("config") or {}, args.config, args.set)
            cfg = with_stac_url(cfg, args.stac_url)
            check_infer_spec(cfg.infer)
            aoi = load_aoi(args.aoi)
            models = load_models(args.checkpoint)
            parts = match_parts(
                split_zones(aoi, cfg.cube.res_m, cfg.cube.epsg), stores, attrs, cfg, models
            )
            since = search_start(attrs)
            found = _acquisitions(cfg, aoi, since[:10], until)
            plans = [
                times_to_do(list(found), a["times_iso"], a.get(PENDING_ATTR) or []) for a in attrs
            ]
            if not any(todo for todo, _ in plans):
                print(
                    f"monitor: up to date: no Sentinel-1 acquisition after {since} "
                    f"until {until} in {cfg.catalog.stac_url}",
                    flush=True,
                )
                return 0
            gone = sorted({t for todo, _ in plans for t in todo if t not in found})
            if gone:
                raise CatalogError(
                    f"time step {gone[0]} of an unfinished monitor run is no longer in "
                    f"{cfg.catalog.stac_url}"
                )
            s2_items = search_composite_s2(cfg, aoi, since, until)
            if args.executor == "ray":
                started_ray = init_ray()
            for part, store, a, (todo, to_append) in zip(parts, stores, attrs, plans, strict=True):
                if not todo:
                    continue
                print(f"monitor: zone {part.name} time steps to do: {', '.join(todo)}", flush=True)
                update_attrs(store, {PENDING_ATTR: todo, COMPLETE_ATTR: False})
                if to_append:
                    ids = list(a.get("s1_item_ids") or [])
                    ids += [[it["id"] for it in found[t]] for t in to_append]
                    append_times(store, to_append, {"s1_item_ids": ids})
                times = read_attrs(store)["times_iso"]
                wrote, _ = fill_zone(
                    store,
                    part,
                    cfg,
                    models,
                    times,
                    [times.index(t) for t in todo],
                    [found[t] for t in todo],
                    s2_items,
                    executor=args.executor,
                    progress=_progress(part.name, t0),
                )
                update_attrs(
                    store,
                    {
                        PENDING_ATTR: [],
                        COMPLETE_ATTR: True,
                        "end": max(str(a.get("end", "")), until),
                        "monitored_utc": dt.datetime.now(dt.timezone.utc).isoformat(
                            timespec="seconds"
                        ),
                    },
                )
                publish_store(store, part.aoi)
                print(f"monitor: zone {part.name} wrote {wrote} tiles", flush=True)
                appended.append((store, todo))
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; unwrap the user-facing ones
        err = user_error(e)
        if err is None:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    for store, todo in appended:
        n = len(read_attrs(store)["times_iso"])
        print(
            f"mosaic: {store}  appended {len(todo)} time step(s), {n} in all  "
            f"({time.monotonic() - t0:.0f} s)"
        )
    return 0


def _acquisitions(cfg: Config, aoi, start: str, end: str) -> dict[str, list[dict]]:
    """S1 acquisitions (ISO time of the pass -> its items) over the AOI, none when none."""
    from sar2opt.cube.load import group_acquisitions
    from sar2opt.profiles import profile_for, require_geocoded
    from sar2opt.stac import search_aoi

    if start > end:
        return {}
    require_geocoded(profile_for(cfg.catalog.stac_url, cfg.catalog.s1_collection))
    items = search_aoi(cfg.catalog, cfg.catalog.s1_collection, aoi, start, end)
    return dict(group_acquisitions(items))


def _progress(name: str, t0: float):
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5 or done == total:
            last[0] = now
            print(f"monitor: zone {name} tiles {done}/{total}  ({now - t0:.0f} s)", flush=True)

    return progress


if __name__ == "__main__":
    sys.exit(main(parse_args()))
