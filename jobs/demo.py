"""The whole pipeline on a local catalog, as `make demo` / `make demo-real` run it.

catalog (synthetic scene or MultiEarth sample) -> local STAC API -> build_cube.py ->
train.py -> infer_region.py -> scores beside a baseline -> PNG. Each stage is the job a
user would submit; this script only wires them together and prints where outputs are.

``--source real`` (``make demo-real``) runs the default real recipe
(``jobs/configs/real.yaml``) on the real sets of ../shared/data: each set is ingested through
``sar2opt catalog`` and made into a cube by build_cube.py; ONE model is trained by train.py on
all three cubes together (each split by its own blocks; the optical bands they share); then
evaluate.py scores it on each cube's held-out blocks (3 seeds, real cloud masks laid on clear
dates, scored under them only), and the scores of every set are printed beside the
baselines; infer_region.py writes the monthly mosaic of one set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
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


#: The per-pass mosaic that is scored is synthesis everywhere (the composite, on by default,
#: would show the real S2 it is scored against); the monthly mosaic keeps real clear S2.
SYNTHESIS_ONLY = ("--set", "infer.composite_max_dt_days=0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=[*sorted(SOURCES), "real"], default="synthetic")
    p.add_argument(
        "--src",
        help="MultiEarth sample folder (--source multiearth); for --source real the folder "
        "holding the real samples (default ../shared/data)",
    )
    p.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        metavar="N",
        help="--source real: train the recipe once per seed (train.seed; the split stays "
        "the config's), score every set with each checkpoint and print how the scores move "
        "between trainings (default: one training, the config's seed)",
    )
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


@dataclass(frozen=True)
class RealSet:
    """One real set through the real path: how it is ingested, its dates, and the cube
    settings its physics needs (the README of each set names the trap)."""

    name: str
    folder: str
    start: str
    end: str
    cube_sets: tuple[str, ...] = ()
    #: a label raster in the set's folder, scored per class (and the downstream forest)
    labels: str | None = None
    #: class edges of a continuous label (``evaluate.py --label-bins``)
    label_bins: tuple[float, ...] = ()


REAL_SETS = (
    # boreal forest, 12 months, both orbits; dark conifers read as shadow at the default
    RealSet(
        "biomassters",
        "biomassters_sample",
        "2019-09-01",
        "2020-08-31",
        ("cube.shadow_brightness=0.008",),
        # LiDAR biomass (Mg/ha) in strata
        labels="ground_truth/0060c0a5_agbm.tif",
        label_bins=(0, 50, 100, 200),
    ),
    # Punjab cropland, June and August/September; bright fields read as cloud at the
    # default, and S1/S2 are 21 days apart in September. Only September has a prior (June),
    # so half the patches go; no cloudy date: training lays other sets' real clouds on it.
    RealSet(
        "ssl4eo",
        "ssl4eo_sample",
        "2020-06-01",
        "2020-09-30",
        ("cube.cloud_brightness=0.2", "cube.max_dt_days=22", "cube.prior_days=120"),
    ),
    # Pará, 4 S1 dates of one 2 km patch, S2 without NIR (so the joint model predicts the
    # visible bands only); a prior only for the last two dates and thin haze
    RealSet(
        "multiearth",
        "multiearth_sample",
        "2019-05-20",
        "2019-07-10",
        ("catalog.opt_bands=[B02, B03, B04]", "cube.prior_days=30"),
    ),
)
REAL_CONFIG = "jobs/configs/real.yaml"
#: the set whose monthly mosaic the real demo writes (12 months, real clouds and snow)
REAL_MOSAIC = "biomassters"


def _ingest(rs: RealSet, src: Path, out: Path) -> list[dict]:
    from sar2opt.catalog import sets
    from sar2opt.catalog.ingest import ingest
    from sar2opt.catalog.multiearth import ingest_multiearth

    if rs.name == "multiearth":
        return ingest_multiearth(src, out)
    build = {"ssl4eo": sets.ssl4eo_manifest, "biomassters": sets.biomassters_manifest}
    return ingest(src, sets.write_manifest(build[rs.name](src), out / "manifest.yaml"), out)


def _real(args: argparse.Namespace, out: Path) -> int:
    """Every real set through ingest -> cube; one model trained on all the cubes; each cube
    evaluated with it; one table at the end."""
    from sar2opt.catalog.server import CatalogServer
    from sar2opt.errors import Sar2OptError

    shared = Path(args.src or REPO.parent / "shared" / "data")
    missing = [rs.folder for rs in REAL_SETS if not (shared / rs.folder).is_dir()]
    if missing:
        raise Sar2OptError(f"--src {shared}: lacks {', '.join(missing)} (the real samples)")
    sets_ = [x for s in args.set for x in ("--set", s)]
    t0 = time.time()
    cubes: dict[str, Path] = {}
    for rs in REAL_SETS:
        d = out / rs.name
        print(f"\n##### {rs.name}: {shared / rs.folder}", flush=True)
        items = _ingest(rs, shared / rs.folder, d / "catalog")
        print(f"    {len(items)} STAC items", flush=True)
        with CatalogServer(d / "catalog") as server:
            common = ["--config", REAL_CONFIG, "--stac-url", server.url, *_own(rs), *sets_]
            _run(
                "build_cube",
                ["jobs/build_cube.py", *_dates(rs, d), "--out", str(d / "cube.zarr"), *common],
            )
        cubes[rs.name] = d / "cube.zarr"
    seeds = args.train_seeds or [None]
    tables: dict[int | None, dict[str, dict]] = {}
    for seed in seeds:
        tag = f"-seed{seed}" if len(seeds) > 1 else ""  # one seed: a plain run's paths
        tables[seed] = _train_and_score(out, shared, cubes, sets_, seed, tag, seed == seeds[0])
    table = tables[seeds[0]]
    for seed, t in tables.items():
        print(_real_table(t) + ("" if seed is None else f"\n(train.seed {seed})"))
    if len(seeds) > 1:
        print(_across_trainings(tables))
    (out / "scores.json").write_text(
        json.dumps(table if len(seeds) == 1 else {str(k): v for k, v in tables.items()}, indent=1)
    )
    evals = "eval" if len(seeds) == 1 else "eval-seed<N>"
    print(f"\n=== done in {time.time() - t0:.0f} s; reports: {out}/<set>/{evals}/report.html")
    return 0


def _train_and_score(
    out: Path,
    shared: Path,
    cubes: dict[str, Path],
    sets_: list[str],
    seed: int | None,
    tag: str,
    first: bool,
) -> dict[str, dict]:
    """One training of the recipe on every cube (``sets_``: the user's ``--set`` arguments;
    ``train.seed=seed`` when given) into ``train<tag>/``, and each set's evaluation with it
    into ``<set>/eval<tag>/``; the ``first`` also writes the monthly mosaic. Returns the
    scores per set."""
    from sar2opt.catalog.server import CatalogServer

    if seed is not None:
        sets_ = [*sets_, "--set", f"train.seed={seed}"]
    train = out / f"train{tag}"
    also = "" if seed is None else f" (train.seed {seed})"
    print(f"\n##### one model on {', '.join(cubes)}{also}", flush=True)
    _run(
        "train",
        ["jobs/train.py", *(x for c in cubes.values() for x in ("--cube", str(c)))]
        + ["--out", str(train), "--config", REAL_CONFIG, *sets_],
    )
    ckpt = train / "checkpoint"
    table: dict[str, dict] = {}
    for rs in REAL_SETS:
        d = out / rs.name
        print(f"\n##### {rs.name}: evaluate", flush=True)
        _run(
            "evaluate",
            ["jobs/evaluate.py", "--cube", str(cubes[rs.name]), "--checkpoint", str(ckpt)]
            + ["--out", str(d / f"eval{tag}"), *_labels(rs, shared)],
        )
        if rs.name == REAL_MOSAIC and first:
            monthly = d / "monthly.zarr"
            with CatalogServer(d / "catalog") as server:
                _run(
                    "infer_region --period 1M",
                    ["jobs/infer_region.py", *_dates(rs, d), "--checkpoint", str(ckpt)]
                    + ["--out", str(monthly), "--period", "1M", "--config", REAL_CONFIG]
                    + ["--stac-url", server.url, *_own(rs), *sets_],
                )
            _show_periods(monthly)
        table[rs.name] = json.loads((d / f"eval{tag}" / "scores.json").read_text())
    return table


def _across_trainings(tables: dict[int | None, dict[str, dict]]) -> str:
    """How the checkpoint's scores move between trainings of the recipe: per set, its MAE /
    ridge's and SSIM per training with their mean ± std, whether every training meets the
    goal (MAE <= 0.8 x ridge, SSIM >= ridge's), and the range of its uncertainty deciles
    (measured |error| / stated; within 0.75-1.25 is calibrated)."""
    import numpy as np

    from sar2opt.evaluate.protocol import RIDGE_PER_DATE as ridge_row

    lines = [
        "\n=== across trainings (train.seed "
        + " ".join(str(s) for s in tables)
        + "): the checkpoint on each set's test blocks",
        f"{'set':12s} {'x ridge per training':>24s} {'mean ± std':>13s} "
        f"{'SSIM - ridge':>22s} {'goal met':>9s}  uncertainty |error| / stated per training",
    ]
    names = next(iter(tables.values())).keys()
    for name in names:
        ratios, dssim, spans = [], [], []
        for t in tables.values():
            summary = t[name]["summary"]
            ck = next(m for m in summary if m.startswith("checkpoint"))
            ratios.append(summary[ck]["mae"][0] / summary[ridge_row]["mae"][0])
            dssim.append(summary[ck]["ssim"][0] - summary[ridge_row]["ssim"][0])
            bins = t[name].get("reliability", {}).get(ck, [])
            r = [b["abs_error"] / b["stated"] for b in bins if b["stated"] > 0]
            spans.append(f"{min(r):.2f}-{max(r):.2f}" if r else "-")
        met = sum(r <= 0.8 and d >= 0 for r, d in zip(ratios, dssim, strict=True))
        lines.append(
            f"{name:12s} {' '.join(f'{r:.2f}' for r in ratios):>24s} "
            f"{np.mean(ratios):.2f} ± {np.std(ratios):.2f} "
            f"{' '.join(f'{d:+.3f}' for d in dssim):>22s} {met:>4d} of {len(ratios)}  "
            + ", ".join(spans)
        )
    return "\n".join(lines)


def _labels(rs: RealSet, shared: Path) -> list[str]:
    """evaluate.py's --labels/--label-bins of a set (none when it has no label on its grid)."""
    if rs.labels is None:
        return []
    bins = ["--label-bins", *map(str, rs.label_bins)] if rs.label_bins else []
    return ["--labels", str(shared / rs.folder / rs.labels), *bins]


def _own(rs: RealSet) -> list[str]:
    """The set's own cube settings as --set arguments."""
    return [x for s in rs.cube_sets for x in ("--set", s)]


def _dates(rs: RealSet, d: Path) -> list[str]:
    """--aoi/--start/--end of a set (its ingest's AOI; MultiEarth's shipped one)."""
    aoi = d / "catalog" / "aoi.geojson"
    if rs.name == "multiearth":
        aoi = REPO / "examples/aoi/multiearth_sample.geojson"
    return ["--aoi", str(aoi), "--start", rs.start, "--end", rs.end]


def _real_table(table: dict[str, dict]) -> str:
    """MAE and SSIM (mean ± std over seeds) per set and method, each against the per-date
    ridge's."""
    from sar2opt.evaluate.protocol import (
        COPY_PRIOR,
        FILLED_FIT,
        MEAN_COLOUR,
        PRIOR_FIT,
        RIDGE_PER_DATE,
    )

    # scores.json summary rows, in this order when present: the checkpoint (its row's name
    # starts so), then evaluate's baselines, strongest first
    rows = ("checkpoint", PRIOR_FIT, FILLED_FIT, RIDGE_PER_DATE, COPY_PRIOR, MEAN_COLOUR)
    lines = [
        "\n=== real sets: MAE and SSIM under real cloud masks laid on clear dates (reflectance, "
        "mean ± std over seeds; x ridge = MAE / ridge per date's; coverage: scored pixels vs "
        "ridge's)",
        f"{'set':12s} {'method':44s} {'MAE':>17s} {'x ridge':>8s} {'SSIM':>15s} "
        f"{'≥ ridge':>7s} {'coverage':>9s}",
    ]
    for name, sc in table.items():
        summary = sc["summary"]
        ridge = summary[RIDGE_PER_DATE]["mae"][0]
        ridge_ssim = summary[RIDGE_PER_DATE]["ssim"][0]
        for want in rows:
            for method, row in summary.items():
                if method == want or (want == "checkpoint" and method.startswith("checkpoint")):
                    m, s = row["mae"]
                    q, qs = row.get("ssim", (float("nan"), float("nan")))
                    cov = sc.get("coverage", {}).get(method, 1.0)
                    ok = "yes" if q >= ridge_ssim else "no"
                    lines.append(
                        f"{name:12s} {method:44s} {m:8.4f} ± {s:.4f} {m / ridge:8.2f} "
                        f"{q:7.3f} ± {qs:.3f} {ok:>7s} {100 * cov:8.0f} %"
                    )
    return "\n".join(lines)


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    from sar2opt.catalog.multiearth import ingest_multiearth
    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_scene
    from sar2opt.config import load_config
    from sar2opt.errors import Sar2OptError

    seeds = args.train_seeds or []
    if seeds and args.source != "real":
        raise Sar2OptError(f"--train-seeds is for --source real, not --source {args.source}")
    if len(set(seeds)) < len(seeds):
        raise Sar2OptError(f"--train-seeds: each seed once, got {' '.join(map(str, seeds))}")
    if args.source == "real":
        load_config(REPO / REAL_CONFIG, args.set)  # a bad config fails here, before any work
        out = resolve_output(args.out)
        remove_own_output(out, "demo")
        claim_folder(out, "demo")
        return _real(args, out)
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
            ["jobs/infer_region.py", *dates, "--checkpoint", ckpt, "--out", str(mosaic), *common]
            + list(SYNTHESIS_ONLY),
        )
        # the product: one wall-to-wall image per month, real clear S2 kept where there is
        # some (the per-pass mosaic is the one scored: its time steps are the cube's dates)
        _run(
            "infer_region --period 1M",
            ["jobs/infer_region.py", *dates, "--checkpoint", ckpt, "--out", str(monthly)]
            + ["--period", "1M", *common],
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
