"""Predict optical imagery over a region from Sentinel-1: tiles on a Ray Data actor pool -> Zarr.

    python jobs/infer_region.py --aoi examples/aoi/synthetic_para.geojson \
        --checkpoint out/checkpoint --start 2023-07-01 --end 2023-08-31 --out out/mosaic.zarr

Under ``ray job submit`` the job joins the cluster named by RAY_ADDRESS; alone it starts a
local Ray. The pipeline is ``sar2opt.infer.run`` (via ``region.fill_zone``): SAR strips read
by Ray tasks -> the generator on an actor pool -> each block's core written to its own Zarr
chunk, recorded in the ledger so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sar2opt.aoi import load_aoi
from sar2opt.config import config_to_dict, load_config
from sar2opt.errors import CatalogError
from sar2opt.infer.ledger import StoreLock
from sar2opt.infer.mosaic import MosaicExistsError, check_mosaic_path
from sar2opt.infer.plan import format_plan, make_plan
from sar2opt.infer.publish import publish_store
from sar2opt.infer.region import (
    COMPLETE_ATTR,
    add_infer_args,
    check_infer_spec,
    fill_zone,
    init_ray,
    load_models,
    one_line,
    run_fingerprint,
    run_settings,
    search_composite_s2,
    user_error,
    with_stac_url,
)
from sar2opt.infer.store import create_store, read_attrs, update_attrs
from sar2opt.paths import resolve_output
from sar2opt.provenance import provenance
from sar2opt.zones import ZonePart, split_zones


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_infer_args(
        p,
        aoi_help="GeoJSON Polygon/MultiPolygon in lon/lat",
        checkpoint_help="checkpoint directory (holds model.pt); repeat for an ensemble",
    )
    p.add_argument("--out", required=True, help="output Zarr store")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan (tiles, bytes, GPU-hours) and stop"
    )
    return p.parse_args(argv)


def _out_paths(out: Path, parts: Sequence[ZonePart]) -> tuple[Path, list[Path]]:
    """Work dir (renamed to ``out`` when complete) and the store of each zone inside it.

    One zone: the store is ``out`` itself. Several: ``out`` is a folder of ``<zone>.zarr``.
    """
    work = out.with_name(out.name + ".partial")
    if len(parts) == 1:
        return work, [work]
    return work, [work / f"{p.name}.zarr" for p in parts]


def _dates_for_plan(cfg, aoi, args) -> tuple[int, str, list | None]:
    from sar2opt.cube.load import group_acquisitions
    from sar2opt.infer.plan import estimate_dates
    from sar2opt.stac import search_s1

    try:
        groups = group_acquisitions(search_s1(cfg.catalog, aoi, args.start, args.end))
        return len(groups), f"S1 acquisitions found in {cfg.catalog.stac_url}", groups
    except CatalogError as e:
        n = estimate_dates(args.start, args.end, cfg.infer.s1_revisit_days)
        note = f"estimated, one per {cfg.infer.s1_revisit_days:g} days: {one_line(e)[:80]}"
        return n, note, None


def main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    started_ray = False
    try:
        cfg = with_stac_url(load_config(args.config, args.set), args.stac_url)
        check_infer_spec(cfg.infer)
        args.out = resolve_output(args.out)  # inside $SAR2OPT_OUTPUT_ROOT when set
        out = Path(args.out) if args.dry_run else check_mosaic_path(args.out, args.overwrite)
        aoi = load_aoi(args.aoi)
        models = load_models(args.checkpoint)  # fail fast on a bad checkpoint
        parts = split_zones(aoi, cfg.cube.res_m, cfg.cube.epsg)
        flips = cfg.infer.tta_flips

        n_dates, dates_note, groups = _dates_for_plan(cfg, aoi, args)
        comp = cfg.infer.composite_max_dt_days
        plan = make_plan(
            parts,
            tile_px=cfg.infer.tile_px,
            overlap_px=cfg.infer.overlap_px,
            dates=n_dates,
            dates_note=dates_note,
            sar_bands=len(models.in_bands),
            out_bands=len(models.out_bands),
            hypotheses=len(models.checkpoints) * flips,
            s2_per_date=(2 * comp / cfg.infer.s2_revisit_days) if comp > 0 else 0.0,
            opt_in_bands=len(cfg.catalog.opt_bands),
            gpu_tiles_per_s=cfg.infer.gpu_tiles_per_s,
        )
        print(format_plan(plan), flush=True)
        if args.dry_run:
            return 0
        if groups is None:  # the plan could not search: now it is an error
            from sar2opt.stac import search_s1

            search_s1(cfg.catalog, aoi, args.start, args.end)
        times = [iso for iso, _ in groups]
        s2_items = search_composite_s2(cfg, aoi, args.start, args.end)

        work, stores = _out_paths(out, parts)
        attrs = provenance("infer")
        attrs.update(
            {
                "model": models.model,
                "checkpoint": models.checkpoints[0],
                "checkpoints": list(models.checkpoints),
                "checkpoint_sha256": models.sha256[0],
                "checkpoints_sha256": list(models.sha256),
                "checkpoint_git_sha": models.git_sha,
                "config": config_to_dict(cfg),
                "in_bands": list(models.in_bands),
                "s1_item_ids": [[it["id"] for it in members] for _, members in groups],
                "aoi_bounds_lonlat": list(aoi.bounds),
                "start": args.start,
                "end": args.end,
                "hypotheses": len(models.checkpoints) * flips,
                "tta_flips": flips,
                COMPLETE_ATTR: False,
            }
        )
        with StoreLock(out):  # the same lock as jobs/monitor.py: one writer per output
            if (
                work.exists()
                and args.overwrite
                and not _resumable(work, stores, parts, cfg, models, times)
            ):
                shutil.rmtree(work)
            for part, store in zip(parts, stores, strict=True):
                fp = run_fingerprint(part, cfg, models, flips)
                if store.exists():
                    old = read_attrs(store)
                    if old.get("run_fingerprint") != fp or old.get("times_iso") != times:
                        raise MosaicExistsError(
                            f"{work} holds a partial run with other settings or dates; "
                            "pass --overwrite to start again"
                        )
                    print(f"infer: resuming {store}", flush=True)
                else:
                    zattrs = dict(attrs, run_fingerprint=fp, zone=part.name)
                    zattrs["run_settings"] = run_settings(part, cfg, models, flips)
                    zattrs["aoi_bounds_lonlat"] = list(part.aoi.bounds)
                    create_store(
                        store, part.grid, times, models.out_bands, zattrs, plan.block_px,
                        shard_blocks=cfg.infer.read_blocks,
                    )  # fmt: skip
                if not started_ray and args.executor == "ray":
                    started_ray = init_ray()
                last = [0.0]

                def progress(done: int, total: int, name: str = part.name, last=last) -> None:
                    now = time.monotonic()
                    if now - last[0] >= 5 or done == total:
                        last[0] = now
                        print(
                            f"infer: zone {name} tiles {done}/{total}  ({now - t0:.0f} s)",
                            flush=True,
                        )

                wrote, total = fill_zone(
                    store,
                    part,
                    cfg,
                    models,
                    times,
                    list(range(len(times))),
                    [members for _, members in groups],
                    s2_items,
                    executor=args.executor,
                    progress=progress,
                )
                print(f"infer: zone {part.name} wrote {wrote} tiles", flush=True)
                update_attrs(store, {COMPLETE_ATTR: True})
                publish_store(store, part.aoi)
            if out.exists():  # --overwrite: replace only now that the new one is complete
                old_out = out.with_name(out.name + f".old-{os.getpid()}")
                os.replace(out, old_out)
                os.replace(work, out)
                shutil.rmtree(old_out, ignore_errors=True)
            else:
                os.replace(work, out)
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
    for store in [out] if len(parts) == 1 else sorted(out.glob("*.zarr")):
        print(f"mosaic: {store}  {_summary(store)}  ({time.monotonic() - t0:.0f} s)")
    return 0


def _resumable(work, stores, parts, cfg, models, times) -> bool:
    """Whether ``work`` is a partial run of exactly this job (kept even with --overwrite)."""
    for part, store in zip(parts, stores, strict=True):
        if not store.exists():
            continue
        old = read_attrs(store)
        fp = run_fingerprint(part, cfg, models, cfg.infer.tta_flips)
        if old.get("run_fingerprint") != fp or old.get("times_iso") != times:
            return False
    return True


def _summary(store: Path) -> str:
    """Dims and valid fraction; the latter only for stores small enough to scan in about a
    second (a 40 km scene took 6 s to re-read: longer than it took to start the job)."""
    import xarray as xr

    ds = xr.open_zarr(store)
    da = ds[list(ds.data_vars)[0]]
    text = f"dims {dict(da.sizes)}"
    if da.size <= 2e7:
        text += f"  valid {float(np.isfinite(da.values).mean()):.1%}"
    return text


if __name__ == "__main__":
    sys.exit(main(parse_args()))
