"""Predict optical imagery over a region from Sentinel-1: tiles on a Ray Data actor pool -> Zarr.

    python jobs/infer_region.py --aoi examples/aoi/synthetic_para.geojson \
        --checkpoint out/checkpoint --start 2023-07-01 --end 2023-08-31 --out out/mosaic.zarr

Under ``ray job submit`` the job joins the cluster named by RAY_ADDRESS; alone it starts a
local Ray. The pipeline is ``sar2opt.infer.region.infer_region``: SAR strips read, predicted
and written by a Ray Data actor pool, each block's core to its own Zarr chunk, recorded in
the ledger so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from sar2opt import jobkit
from sar2opt.infer.region import Region, infer_region
from sar2opt.infer.store import check_output
from sar2opt.paths import check_replaceable, resolve_output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    jobkit.add_aoi_args(p)
    jobkit.add_infer_args(p, "checkpoint directory (holds model.pt); repeat for an ensemble")
    jobkit.add_out_arg(
        p,
        "output Zarr store (a folder of <zone>.zarr if the AOI spans zones)",
        dry_run_help="print the plan (tiles, bytes, GPU-hours) and stop",
    )
    p.add_argument(
        "--period",
        help="one output time step per period: 12D, 2W, 1M, 1Y (days and weeks counted from "
        "1970-01-01, months on the calendar), or 'acquisition' for one per S1 acquisition "
        "(default: infer.period of the config)",
    )
    jobkit.add_config_args(p)
    jobkit.add_stac_url_arg(p)
    return p.parse_args(argv)


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    cfg = jobkit.load_job_config(args)
    out = resolve_output(args.out)  # inside $SAR2OPT_OUTPUT_ROOT when set
    if not args.dry_run:
        check_replaceable(out, "infer")  # never onto a user's files, even with --overwrite
        check_output(out, args.overwrite)  # before hours of inference
    region = Region.open(cfg, args.aoi, args.checkpoint)
    infer_region(
        region, out, args.start, args.end,
        overwrite=args.overwrite, dry_run=args.dry_run, executor=args.executor,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
