"""Build a training/evaluation cube: STAC search -> stackstac -> clean + pair -> Zarr v3.

    python jobs/build_cube.py --aoi examples/aoi/synthetic_para.geojson \
        --start 2023-07-01 --end 2023-08-31 --out out/cube.zarr

The cube is written tile by tile (``cube.tile_px``). An AOI inside one UTM zone gives one
store at ``--out``; an AOI across zones gives a directory ``--out`` with ``<zone>.zarr`` (``21S``)
per zone. Re-running into an incomplete output resumes it (finished tiles are skipped); a
complete one is refused unless ``--overwrite``. ``--dry-run`` prints the tile plan and stops.
Under ``ray job submit`` (RAY_ADDRESS set) or with ``--executor ray`` tiles run as Ray tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from sar2opt.aoi import load_aoi
from sar2opt.config import load_config
from sar2opt.cube.build import cube_bands
from sar2opt.cube.tiled_build import build_tiled, check_output
from sar2opt.cube.tiles import format_plan, plan_zones
from sar2opt.errors import Sar2OptError
from sar2opt.paths import resolve_output
from sar2opt.runtime import init_ray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aoi", required=True, help="GeoJSON Polygon/MultiPolygon in lon/lat")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument(
        "--out", required=True, help="output Zarr store (directory of stores if multi-zone)"
    )
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--stac-url", help="STAC API endpoint (overrides catalog.stac_url)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--dry-run", action="store_true", help="print the per-zone tile plan; search nothing"
    )
    p.add_argument(
        "--executor",
        choices=("auto", "serial", "ray"),
        default="auto",
        help="auto: Ray tasks if RAY_ADDRESS is set (ray job submit), else serial",
    )
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    started_ray = False
    try:
        cfg = load_config(args.config, args.set)
        if args.stac_url:
            cfg = dataclasses.replace(
                cfg, catalog=dataclasses.replace(cfg.catalog, stac_url=args.stac_url)
            )
        if args.dry_run:
            aoi = load_aoi(args.aoi)
            plans = plan_zones(aoi, cfg.cube)
            for line in format_plan(plans, len(cube_bands(cfg.catalog, cfg.cube))):
                print(line)
            return 0
        args.out = resolve_output(args.out)  # inside $SAR2OPT_OUTPUT_ROOT when set
        check_output(args.out, args.overwrite)
        aoi = load_aoi(args.aoi)
        use_ray = args.executor == "ray" or (
            args.executor == "auto" and bool(os.environ.get("RAY_ADDRESS"))
        )
        if use_ray:
            started_ray = init_ray()
        res = build_tiled(
            aoi,
            args.start,
            args.end,
            catalog=cfg.catalog,
            spec=cfg.cube,
            out=args.out,
            overwrite=args.overwrite,
            log=lambda s: print(s, flush=True),
        )
    except Sar2OptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    import xarray as xr

    for store in res.stores:
        ds = xr.open_zarr(store)
        print(f"cube: {store}  dims {dict(ds.sizes)}")
    print(f"tiles: {res.tiles_run} written, {res.tiles_total - res.tiles_run} already complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
