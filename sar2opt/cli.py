"""``sar2opt`` command line: thin argparse front-end over the library functions.

User errors (``Sar2OptError``) print one ``error: ...`` line on stderr and exit 2; anything else is
a bug and keeps its traceback. Dates are checked first (``jobkit.check_dates``); every ``--out``
is resolved inside $SAR2OPT_OUTPUT_ROOT when that is set (``sar2opt.paths.resolve_output``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sar2opt.errors import Sar2OptError, first_line
from sar2opt.paths import resolve_output


def _summary(items: list[dict], out: Path) -> str:
    by_coll: dict[str, int] = {}
    for it in items:
        by_coll[it["collection"]] = by_coll.get(it["collection"], 0) + 1
    parts = ", ".join(f"{n} {c}" for c, n in sorted(by_coll.items()))
    return f"wrote {len(items)} items ({parts}) to {out / 'items.parquet'}"


def _cmd_synth(args: argparse.Namespace) -> int:
    from sar2opt.catalog.synthetic import generate_scene

    out = resolve_output(args.out)
    items = generate_scene(out, seed=args.seed, size_km=args.size_km)
    print(_summary(items, out))
    return 0


def _cmd_synth_region(args: argparse.Namespace) -> int:
    from sar2opt.catalog.synthetic import SynthSpec, generate_region
    from sar2opt.catalog.terrain import TerrainSpec

    spec = SynthSpec(
        seed=args.seed,
        res_m=args.res_m,
        terrain=TerrainSpec(relief_m=args.relief_m),
        orbit_states=tuple(dict.fromkeys(args.orbit or ["descending"])),
        s1_revisit_days=args.s1_revisit_days,
        s2_bands=tuple(args.s2_bands.split(",")),
        qa60_reliable=args.qa60_reliable,
    )
    out = resolve_output(args.out)
    items = generate_region(out, args.bbox, args.start, args.end, spec)
    print(_summary(items, out))
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic S1 + S2 + DEM region (COGs + STAC items) for a bbox and period",
    )
    p.add_argument(
        "--bbox", required=True, type=float, nargs=4, metavar=("W", "S", "E", "N"), help="lon/lat"
    )
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--out", required=True, help="output folder (cogs/, truth/, items.parquet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--res-m", type=float, default=10.0, help="pixel size in metres")
    p.add_argument(
        "--relief-m", type=float, default=40.0, help="hill height: ~40 lowland, 2000 mountains"
    )
    p.add_argument(
        "--orbit",
        action="append",
        choices=["descending", "ascending"],
        default=None,
        help="Sentinel-1 orbit direction(s) (default descending; repeat for both)",
    )
    p.add_argument("--s1-revisit-days", type=int, default=12, choices=[6, 12])
    p.add_argument("--s2-bands", default="B02,B03,B04,B08", help="comma-separated S2 bands")
    p.add_argument(
        "--qa60-reliable",
        action="store_true",
        help="write true cloud bits in QA60 (default: all zeros, as in the real archive)",
    )
    p.set_defaults(func=_cmd_synth_region)


def _cmd_multiearth(args: argparse.Namespace) -> int:
    from sar2opt.catalog.multiearth import ingest_multiearth

    out = resolve_output(args.out)
    items = ingest_multiearth(Path(args.src), out)
    print(_summary(items, out))
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from sar2opt.catalog.ingest import ingest

    out = resolve_output(args.out)
    items = ingest(Path(args.src), Path(args.manifest), out)
    print(_summary(items, out))
    return 0


def _cmd_real_set(args: argparse.Namespace) -> int:
    """ssl4eo / biomassters: write the set's manifest into --out, then ingest through it."""
    from sar2opt.catalog import sets
    from sar2opt.catalog.ingest import ingest

    out = resolve_output(args.out)
    src = Path(args.src)
    if not src.is_dir():
        from sar2opt.errors import CatalogError

        raise CatalogError(f"{args.catalog_cmd} folder not found: {src}")
    build = {"ssl4eo": sets.ssl4eo_manifest, "biomassters": sets.biomassters_manifest}
    manifest = sets.write_manifest(build[args.catalog_cmd](src), out / "manifest.yaml")
    print(f"manifest: {manifest}")
    items = ingest(src, manifest, out)
    print(_summary(items, out))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from sar2opt.catalog.server import CatalogServer

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (and SIGINT even where a launcher ignored it) stop the server instead of orphaning it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    server = CatalogServer(args.dir, port=args.port)
    server.start()
    print(f"serving {server.parquet} at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
        print("error: the catalog server exited", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _add_catalog(sub: argparse._SubParsersAction) -> None:
    cat = sub.add_parser("catalog", help="build or serve the local STAC catalog")
    csub = cat.add_subparsers(dest="catalog_cmd", required=True)

    p = csub.add_parser("synth", help="generate the synthetic Pará scene and its catalog")
    p.add_argument("--out", required=True, help="output folder (COGs, items.parquet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-km", type=float, default=10.24, help="scene side length in km")
    p.set_defaults(func=_cmd_synth)

    p = csub.add_parser("multiearth", help="ingest the MultiEarth sample into a catalog")
    p.add_argument("src", help="folder with Sentinel1_*/Sentinel2_* GeoTIFFs")
    p.add_argument("--out", required=True, help="output folder (COGs, items.parquet)")
    p.set_defaults(func=_cmd_multiearth)

    p = csub.add_parser(
        "ingest",
        help="warp a folder of GeoTIFFs onto one grid as COGs + STAC items, through a manifest",
    )
    p.add_argument("src", help="folder holding the files (manifest paths are relative to it)")
    p.add_argument(
        "--manifest",
        required=True,
        help="YAML: files: [{path, sensor: s1|s2|dem, band, date, units, ...}] "
        "(sar2opt/catalog/ingest.py)",
    )
    p.add_argument("--out", required=True, help="output folder (COGs, items.parquet, aoi.geojson)")
    p.set_defaults(func=_cmd_ingest)

    for name, what in (
        ("ssl4eo", "the SSL4EO-S12 sample (s1/, s2a/)"),
        ("biomassters", "the BioMassters sample (train/<chip>_S1_MM.tif, _S2_MM.tif)"),
    ):
        p = csub.add_parser(name, help=f"write a manifest for {what} and ingest it")
        p.add_argument("src", help=f"folder of {what}")
        p.add_argument(
            "--out", required=True, help="output folder (manifest.yaml, COGs, items, aoi.geojson)"
        )
        p.set_defaults(func=_cmd_real_set)

    p = csub.add_parser("serve", help="serve DIR/items.parquet as a STAC API (foreground)")
    p.add_argument("dir", help="catalog folder holding items.parquet")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p.set_defaults(func=_cmd_serve)


def _cmd_export_cog(args: argparse.Namespace) -> int:
    from sar2opt.export import export_cogs

    out = resolve_output(args.out)
    items = export_cogs(args.store, out, args.time)
    print(f"wrote {len(items)} STAC items with their COGs to {out} ({out / 'collection.json'})")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="export a mosaic store for other tools")
    esub = exp.add_subparsers(dest="export_cmd", required=True)
    p = esub.add_parser(
        "cog",
        help="Cloud-Optimized GeoTIFFs (one per band, source, uncertainty) + STAC items "
        "per time step, for GIS tools (GDAL cannot read the sharded Zarr store)",
    )
    p.add_argument("store", help="a finished mosaic (jobs/infer_region.py --out)")
    p.add_argument("--out", required=True, help="output folder (<item>/<band>.tif, items)")
    p.add_argument(
        "--time",
        action="append",
        default=None,
        help="a time step of the store (its ISO time, or a date naming one); repeat for "
        "several; default: all",
    )
    p.set_defaults(func=_cmd_export_cog)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; other stages add their subcommands here."""
    parser = argparse.ArgumentParser(prog="sar2opt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_catalog(sub)
    _add_synth(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sar2opt`` console script; returns the exit code."""
    from sar2opt.jobkit import check_dates

    args = build_parser().parse_args(argv)
    try:
        check_dates(args)
        return int(args.func(args))
    except Sar2OptError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
