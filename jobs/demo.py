"""The whole pipeline on a local catalog, as `make demo` / `make demo-real` run it.

catalog (synthetic scene or MultiEarth sample) -> local STAC API -> build_cube.py ->
train.py -> infer_region.py -> scores beside a baseline -> PNG. Each stage is the job a
user would submit; this script only wires them together and prints where outputs are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sar2opt import jobkit
from sar2opt.paths import claim_folder, remove_own_output, resolve_output

REPO = Path(__file__).resolve().parents[1]

SOURCES = {
    # source: (config, AOI, start, end)
    "synthetic": (
        "jobs/configs/demo.yaml",
        "examples/aoi/synthetic_para.geojson",
        "2023-07-01",
        "2023-08-31",
    ),
    "multiearth": (
        "jobs/configs/multiearth.yaml",
        "examples/aoi/multiearth_sample.geojson",
        "2019-05-20",
        "2019-07-10",
    ),
}


#: The monthly mosaic keeps real clear S2 (``infer.composite_max_dt_days`` > 0 turns it on; in
#: a period mosaic any clear S2 pixel inside the period counts).
COMPOSITE_DAYS = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=sorted(SOURCES), default="synthetic")
    p.add_argument("--src", help="MultiEarth sample folder (for --source multiearth)")
    jobkit.add_out_arg(
        p, "folder for every output (an earlier demo folder there is replaced)", default="out/demo"
    )
    jobkit.add_config_args(p, config=False)
    return p.parse_args(argv)


def _run(step: str, args: list[str]) -> None:
    print(f"\n=== {step}: {' '.join(args)}", flush=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, *args], cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"error: {step} failed (exit {proc.returncode})")
    print(f"=== {step} done in {time.time() - t0:.0f} s", flush=True)


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    from sar2opt.catalog.multiearth import ingest_multiearth
    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_scene
    from sar2opt.config import load_config
    from sar2opt.errors import Sar2OptError

    config, aoi, start, end = SOURCES[args.source]
    load_config(REPO / config, args.set)  # a bad config fails here, before any work
    out = resolve_output(args.out)  # inside $SAR2OPT_OUTPUT_ROOT when set
    remove_own_output(out, "demo")  # only an earlier demo folder: never a user's files
    claim_folder(out, "demo")
    sets = [x for s in args.set for x in ("--set", s)]
    t0 = time.time()
    print(f"=== catalog: {args.source} -> {out / 'catalog'}", flush=True)
    if args.source == "synthetic":
        items = generate_scene(out / "catalog")
    else:
        if not args.src:
            raise Sar2OptError("--src is required for --source multiearth")
        items = ingest_multiearth(Path(args.src), out / "catalog")
    print(f"    {len(items)} STAC items", flush=True)
    cube, train, mosaic = out / "cube.zarr", out / "train", out / "mosaic.zarr"
    monthly = out / "monthly.zarr"
    with CatalogServer(out / "catalog") as server:
        print(f"=== STAC API serving at {server.url}", flush=True)
        dates = ["--aoi", aoi, "--start", start, "--end", end]
        common = ["--config", config, "--stac-url", server.url, *sets]
        _run("build_cube", ["jobs/build_cube.py", *dates, "--out", str(cube), *common])
        _run(
            "train",
            ["jobs/train.py", "--cube", str(cube), "--out", str(train), "--config", config, *sets],
        )
        ckpt = str(train / "checkpoint")
        _run(
            "infer_region",
            ["jobs/infer_region.py", *dates, "--checkpoint", ckpt, "--out", str(mosaic), *common],
        )
        # the product: one wall-to-wall image per month, real clear S2 kept where there is
        # some (the per-pass mosaic is the one scored: its time steps are the cube's dates)
        _run(
            "infer_region --period 1M",
            ["jobs/infer_region.py", *dates, "--checkpoint", ckpt, "--out", str(monthly)]
            + ["--period", "1M", *common, "--set", f"infer.composite_max_dt_days={COMPOSITE_DAYS}"],
        )
    png, scores = _look(out)
    _show_periods(monthly)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    print(f"\n=== done in {time.time() - t0:.0f} s")
    print(f"catalog    : {out / 'catalog'}")
    print(f"cube       : {cube}")
    print(f"checkpoint : {ckpt}")
    print(f"mosaic     : {mosaic}   (one time step per S1 pass; xarray.open_zarr)")
    print(f"monthly    : {monthly}   (one wall-to-wall image per month)")
    print(f"picture    : {png}")
    print(f"scores     : {out / 'scores.json'}")
    return 0


def _show_periods(monthly: Path) -> None:
    """The monthly mosaic's periods and what each is made of."""
    import xarray as xr

    from sar2opt import analysis as an

    ds = xr.open_zarr(monthly, consolidated=False)
    print(f"\n=== monthly mosaic: {ds.sizes['time']} period(s) of {ds.attrs.get('period')}")
    for day, mix in an.evidence_mix(ds):
        print(f"    {day[:7]}: " + ", ".join(f"{m} {f:.0%}" for m, f in mix.items()))


def _look(out: Path) -> tuple[Path, dict]:
    """Scores beside the baseline on the test blocks, and the SAR | prediction | S2 picture."""
    import numpy as np
    import xarray as xr

    from sar2opt.config import config_from_dict
    from sar2opt.evaluate.compare import compare_mosaic_to_cube
    from sar2opt.evaluate.metrics import format_table
    from sar2opt.evaluate.quicklook import write_quicklook
    from sar2opt.infer.store import OPTICAL_VAR
    from sar2opt.train.checkpoint import load_meta

    meta = load_meta(out / "train" / "checkpoint")
    patches = config_from_dict(meta["config"], saved=True).patches  # the split it was trained with
    scores = compare_mosaic_to_cube(
        out / "mosaic.zarr", out / "cube.zarr", meta["norm"]["opt_mean"], patches
    )
    print(
        "\n=== mosaic scored on the clear pixels of the test blocks (never seen in training), "
        f"dates {', '.join(scores['times'])}, reflectance units"
    )
    print(format_table(scores["rows"]))

    pred = xr.open_zarr(out / "mosaic.zarr", consolidated=False)[OPTICAL_VAR]
    cube = xr.open_zarr(out / "cube.zarr")["cube"].sel(x=pred.x, y=pred.y, method="nearest")
    clear = cube.sel(band="clear").mean(("y", "x")).values
    t = int(np.argmax(clear))  # the date with the most clear S2 to compare against
    sar_bands = list(cube.attrs.get("sar_bands", [])) or ["vv", "vh"]
    sar = cube.isel(time=t).sel(band=sar_bands).values
    truth = cube.isel(time=t).sel(band=list(pred.band.values)).values
    png = write_quicklook(
        out / "quicklook.png",
        sar,
        pred.sel(time=cube.time[t]).values,
        truth,
        list(pred.band.values),
        title=f"S1 {str(cube.time.values[t])[:10]}: SAR | prediction | S2 (clear pixels) | error",
    )
    return Path(png), scores


if __name__ == "__main__":
    sys.exit(main(parse_args()))
