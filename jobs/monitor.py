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
line, exit 2. A run killed half-way is finished by the next one (pending times + ledger).
The flow is ``sar2opt.infer.region.monitor_region``.
"""

from __future__ import annotations

import argparse
import sys

from sar2opt import jobkit
from sar2opt.infer.region import monitor_region


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    jobkit.add_aoi_args(p, aoi_help="the GeoJSON the store was made for", dates=False)
    jobkit.add_infer_args(p, "checkpoint directory the store was made with; repeat for an ensemble")
    p.add_argument("--store", required=True, help="mosaic made by jobs/infer_region.py --out")
    p.add_argument("--until", help="last date to search, YYYY-MM-DD (default: today, UTC)")
    jobkit.add_config_args(p)
    jobkit.add_stac_url_arg(p)
    return p.parse_args(argv)


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    store = jobkit.output_path(args, "infer", "store")  # in the root; a sar2opt mosaic
    monitor_region(
        store,
        args.aoi,
        args.checkpoint,
        until=args.until,
        config_path=args.config,
        overrides=jobkit.overrides(args),
        executor=args.executor,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
