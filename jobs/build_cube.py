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
import os
import sys

from sar2opt import jobkit
from sar2opt.aoi import load_aoi
from sar2opt.cube.build import cube_bands
from sar2opt.cube.tiled_build import build_tiled, check_output
from sar2opt.cube.tiles import format_plan, plan_zones
from sar2opt.runtime import init_ray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    jobkit.add_aoi_args(p)
    jobkit.add_out_arg(
        p,
        "output Zarr store (directory of stores if multi-zone)",
        dry_run_help="print the per-zone tile plan; search nothing",
    )
    jobkit.add_config_args(p)
    jobkit.add_stac_url_arg(p)
    p.add_argument(
        "--executor",
        choices=("auto", "serial", "ray"),
        default="auto",
        help="auto: Ray tasks if RAY_ADDRESS is set (ray job submit), else serial",
    )
    return p.parse_args(argv)


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    cfg = jobkit.load_job_config(args)
    if args.dry_run:
        for line in format_plan(
            plan_zones(load_aoi(args.aoi), cfg.cube), len(cube_bands(cfg.catalog, cfg.cube))
        ):
            print(line)
        return 0
    out = jobkit.output_path(args, "cube")  # inside $SAR2OPT_OUTPUT_ROOT; ours to replace
    check_output(out, args.overwrite)
    aoi = load_aoi(args.aoi)
    if args.executor == "ray" or (args.executor == "auto" and os.environ.get("RAY_ADDRESS")):
        init_ray()
    res = build_tiled(
        aoi, args.start, args.end, catalog=cfg.catalog, spec=cfg.cube, out=out,
        overwrite=args.overwrite, log=lambda s: print(s, flush=True),
    )  # fmt: skip
    import xarray as xr

    for store in res.stores:
        print(f"cube: {store}  dims {dict(xr.open_zarr(store).sizes)}")
    print(f"tiles: {res.tiles_run} written, {res.tiles_total - res.tiles_run} already complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
