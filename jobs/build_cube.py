"""Build a training/evaluation cube: STAC search -> stackstac -> clean + pair -> Zarr v3.

    python jobs/build_cube.py --aoi examples/aoi/synthetic_para.geojson \
        --start 2023-07-01 --end 2023-08-31 --out out/cube.zarr
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from sar2opt.aoi import load_aoi
from sar2opt.config import load_config
from sar2opt.cube.build import build_cube
from sar2opt.cube.store import check_output_path, write_zarr_atomic
from sar2opt.errors import Sar2OptError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aoi", required=True, help="GeoJSON Polygon/MultiPolygon in lon/lat")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--out", required=True, help="output Zarr store")
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--stac-url", help="STAC API endpoint (overrides catalog.stac_url)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.set)
        if args.stac_url:
            cfg = dataclasses.replace(
                cfg, catalog=dataclasses.replace(cfg.catalog, stac_url=args.stac_url)
            )
        check_output_path(args.out, args.overwrite)
        aoi = load_aoi(args.aoi)
        ds = build_cube(aoi, args.start, args.end, catalog=cfg.catalog, spec=cfg.cube)
        ds = ds.chunk({"time": 1, "band": -1, "y": cfg.cube.chunk_px, "x": cfg.cube.chunk_px})
        path = write_zarr_atomic(ds, args.out, overwrite=args.overwrite)
    except Sar2OptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cube: {path}  dims {dict(ds.sizes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
