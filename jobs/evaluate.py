"""Score a checkpoint of any input set on a cube beside the baselines, over splits and seeds.

    python jobs/evaluate.py --cube out/cube.zarr --checkpoint out/train/checkpoint --out out/eval
        [--seeds 0 1 2] [--block-px 32] [--val-frac 0.5] [--residual-steps 300]
        [--bands B04 B08] [--cloud-removal] [--flips N]
        [--labels LABELS.tif [--label-bins 0 50 100 200]]
    python jobs/evaluate.py --stac-url URL --aoi AOI.geojson --start D --end D
        --checkpoint CKPT --out out/eval [--set cube.KEY=VALUE]   # builds out/eval/cube.zarr

Methods: the checkpoint, fed every input its input set reads (SAR, the prior clear S2, the
same-date cloudy S2 + cloud mask, the DEM: the cube's bands, made into the model's tensors
by the inference predictor), the constant train-mean colour, the ridge fit per date and
"copy the prior clear pixel" (baselines), ridge pooled over dates, and 'SAR + scene-fit
reference' (a small U-Net correcting the per-date ridge, refitted per seed).

Held-out blocks (S, SD, SO, SOD checkpoints; drawn only where the checkpoint never trained:
its test or validation blocks), or, for cloud-removal checkpoints (SC, SCO, SCOD) and with
``--cloud-removal``, real cloud masks of a cloudy date laid onto clear dates and every
method scored under them (``evaluate.protocol``). Every method gets MAE and SSIM
(gaussian window over the scored pixels), and the table says whether each is at least the
ridge's SSIM. ``--labels``: MAE/SSIM per class of a label raster (``--label-bins`` for a
continuous one) and a downstream check (a random forest on real S2 predicting the label,
applied to real vs synthesised S2); a cube with a ``dem`` band: MAE/SSIM per slope class; a
checkpoint with 2+ hypotheses: the MultiEarth best-of-N beside its single output. Without
``--cube``, the cube of ``--aoi/--start/--end`` is built from ``--stac-url`` with the
checkpoint's catalog and cube settings (``cube.tiled_build.build_tiled``, as
jobs/build_cube.py) into ``--out``/cube.zarr. Progress goes to stderr; writes
``report.html`` and ``scores.json``; user errors are one ``error: ...`` line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sar2opt import jobkit
from sar2opt.errors import Sar2OptError
from sar2opt.paths import claim_folder

TERRAIN_BANDS = ("layover", "foreshortening", "shadow", "non_distorted")


class EvaluateError(Sar2OptError):
    """The cube or checkpoint cannot be evaluated as asked."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", type=Path, default=None, help="Zarr cube from the cube stage")
    jobkit.add_stac_url_arg(ap)
    ap.add_argument("--aoi", help="without --cube: build the cube of this AOI (GeoJSON)")
    ap.add_argument("--start", help="without --cube: first date, YYYY-MM-DD")
    ap.add_argument("--end", help="without --cube: last date, YYYY-MM-DD")
    jobkit.add_config_args(ap, config=False)
    ap.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory")
    jobkit.add_out_arg(ap, "folder for report.html, scores.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--block-px", type=int, default=32, help="side of a held-out block")
    ap.add_argument("--val-frac", type=float, default=0.5, help="fraction of candidate blocks")
    ap.add_argument(
        "--buffer-px", type=int, default=8, help="ring kept out of training around held-out blocks"
    )
    ap.add_argument(
        "--cloud-buffer-px",
        type=int,
        default=0,
        help="ring around laid clouds kept out of the baselines' fits (default 0: they see "
        "every pixel the model sees)",
    )
    ap.add_argument(
        "--cloud-masks-from",
        type=Path,
        nargs="+",
        default=[],
        metavar="CUBE",
        help="cubes whose real cloud masks are laid when this cube has no cloudy date to lend "
        "(a clear season), instead of its held-out blocks",
    )
    ap.add_argument("--residual-steps", type=int, default=300, help="0: skip the residual net")
    ap.add_argument("--residual-ngf", type=int, default=16)
    ap.add_argument("--target", type=float, default=0.15, help="MAE gain over ridge to pass")
    ap.add_argument("--bands", nargs="+", default=None, help="bands to score (default: all)")
    ap.add_argument(
        "--cloud-removal",
        action="store_true",
        help="score under real cloud masks laid on clear dates (always on for SC/SCO/SCOD)",
    )
    ap.add_argument(
        "--flips",
        type=int,
        default=None,
        help="test-time flips of the checkpoint (default: its infer.tta_flips, as inference)",
    )
    ap.add_argument(
        "--labels",
        default=None,
        help="label raster (GeoTIFF / netCDF): scores per class and a downstream check",
    )
    ap.add_argument(
        "--label-bins",
        type=float,
        nargs="+",
        default=None,
        help="bin edges for a continuous label (e.g. biomass: 0 50 100 200)",
    )
    args = ap.parse_args(argv)
    if args.cube is None and not (args.aoi and args.start and args.end):
        ap.error("give --cube, or --aoi, --start and --end (and --stac-url) to build one")
    return args


#: How to build a cube that has each model input (the cube flag; ``{}``: the checkpoint's value).
CUBE_FLAG = {
    "prior": "--set cube.prior_days={prior_days:g}",
    "cloudy": "--set cube.cloudy=true",
    "dem": "--set catalog.dem_collection={dem}",
}


def checkpoint_inputs(meta: dict, cube_bands: list[str], cube_attrs: dict) -> dict:
    """The cube bands of the checkpoint's extra inputs ({key: bands}); EvaluateError naming
    the missing bands and the cube flag that makes them, or a cube whose prior / same-date
    S2 rule differs from the checkpoint's training cube (``predictor.input_rule``)."""
    from sar2opt.data.inputs import input_keys
    from sar2opt.data.patches import CLOUD_MASK_BAND, CLOUDY_PREFIX, DEM_BAND, PRIOR_PREFIX
    from sar2opt.infer.predictor import PRIOR_RULE, checkpoint_input_set, input_rule

    input_set = checkpoint_input_set(meta)
    out_bands = list(meta["out_bands"])
    defaults = {
        "prior": [PRIOR_PREFIX + b for b in out_bands],
        "cloudy": [*(CLOUDY_PREFIX + b for b in out_bands), CLOUD_MASK_BAND],
        "dem": [DEM_BAND],
    }
    rule = input_rule(meta)
    dem = ((meta.get("config") or {}).get("catalog") or {}).get("dem_collection")
    aux = {}
    for key in input_keys(input_set):
        if key == "sar":
            continue
        bands = list((meta.get("aux_bands") or {}).get(key) or defaults[key])
        missing = [b for b in bands if b not in cube_bands]
        if missing:
            flag = CUBE_FLAG[key].format(prior_days=rule.prior_days, dem=dem or "cop-dem-glo-30")
            raise EvaluateError(
                f"the checkpoint (input set {input_set}) reads {key} band(s) "
                f"{', '.join(missing)}, which the cube lacks: build it with {flag}"
            )
        aux[key] = bands
    spec = cube_attrs.get("cube_spec")
    if isinstance(spec, dict) and {"prior", "cloudy"} & set(aux):
        keys = [k for k in PRIOR_RULE if k != "prior_days" or "prior" in aux]
        for k in keys:
            want = getattr(rule, k)
            if k in spec and spec[k] != want:
                raise EvaluateError(
                    f"the cube's prior / same-date S2 were made with cube.{k}={spec[k]}, the "
                    f"checkpoint's training cube with cube.{k}={want}: rebuild the cube "
                    f"with --set cube.{k}={want}"
                )
    return aux


def _flips(meta: dict, flips: int | None) -> int:
    """The flips inference would use (the checkpoint config's ``infer.tta_flips``)."""
    from sar2opt.config import config_from_dict

    if flips is not None:
        return flips
    try:
        return config_from_dict(meta.get("config") or {}, saved=True).infer.tta_flips
    except Sar2OptError:
        return 1


def _checkpoint(args: argparse.Namespace, scene, meta: dict) -> tuple[dict, object, list[str]]:
    """Methods from the checkpoint, the allowed block area, and notes."""

    from sar2opt.config import PatchSpec, config_from_dict
    from sar2opt.data.index import split_pixels
    from sar2opt.data.inputs import input_keys
    from sar2opt.evaluate.holdout import held_out_pixels
    from sar2opt.evaluate.protocol import predictor_method
    from sar2opt.infer.predictor import TilePredictor, checkpoint_input_set
    from sar2opt.infer.run import scene_fits

    input_set = checkpoint_input_set(meta)
    flips = _flips(meta, args.flips)
    try:
        predictor = TilePredictor(args.checkpoint, device="auto", flips=flips)
    except ValueError as e:
        raise EvaluateError(f"cannot load {args.checkpoint}: {e}") from None
    try:
        pspec = config_from_dict(meta.get("config") or {}, saved=True).patches
    except Sar2OptError:
        pspec = PatchSpec()
    h, w = scene.clear.shape[1:]
    # The blocks the checkpoint's patch index kept out of training (same cube, same split).
    split = "test" if pspec.test_frac > 0 else "val"
    try:
        held = held_out_pixels(meta, args.cube, h, w, split)  # its record of this cube
        allowed = split_pixels(h, w, pspec, split) if held is None else held.pixels
    except (Sar2OptError, ValueError) as e:
        raise EvaluateError(f"cannot rebuild the checkpoint's split on this cube: {e}") from None
    if not allowed.any():
        raise EvaluateError(f"the checkpoint's patch index has no {split} block on this cube")
    name = (
        f"checkpoint {meta['model'].get('generator', '?')} {input_set} "
        f"(epoch {meta.get('epoch', '?')})"
    )
    where = (
        f"Scored only inside the {split} blocks of the checkpoint's patch "
        f"index ({int(allowed.sum())} px; patches.block_px {pspec.block_px}, split_seed "
        f"{pspec.split_seed}), which it never trained on"
    )
    if held is not None:
        where = held.note[:1].upper() + held.note[1:]
    note = (
        f"{where}, so its score is honest (every "
        "method is scored on the same pixels). The checkpoint reads "
        f"{' + '.join(input_keys(input_set))} (input set {input_set}) through the inference "
        f"predictor with {flips} test-time flip(s), the mean of its hypotheses as its "
        "prediction and their spread as its uncertainty, as inference writes them."
    )
    fits = scene_fits(meta, h, w)
    if fits is not None:
        note += (
            f" Its scene-fit reference is blended between the fits of the "
            f"{len(fits.windows) * len(fits.windows[0])} inference windows over the scene, as "
            "infer_region.py writes it."
        )
    method = predictor_method(predictor, input_keys(input_set), candidates=True, fits=fits)
    return {name: method}, allowed, [note]


def build_cube(args: argparse.Namespace, meta: dict | None, log) -> Path:
    """Build the cube of ``--aoi/--start/--end`` into ``--out``/cube.zarr through the cube
    stage's own builder (``build_tiled``, what jobs/build_cube.py runs), with the
    checkpoint's catalog and cube settings (its training cube's prior / same-date S2 rule),
    then ``--stac-url`` and ``--set`` on top; the one store's path."""
    import dataclasses
    import tempfile

    import yaml

    from sar2opt.aoi import load_aoi
    from sar2opt.config import config_from_dict, config_to_dict
    from sar2opt.cube.tiled_build import build_tiled

    saved = config_from_dict((meta or {}).get("config") or {}, saved=True)
    if meta is not None and meta.get("cube_spec"):
        from sar2opt.infer.predictor import PRIOR_RULE, input_rule

        rule = input_rule(meta)
        saved = dataclasses.replace(
            saved,
            cube=dataclasses.replace(saved.cube, **{k: getattr(rule, k) for k in PRIOR_RULE}),
        )
    with tempfile.TemporaryDirectory() as tmp:  # the saved config + this job's overrides
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config_to_dict(saved)))
        args.config = str(path)
        cfg = jobkit.load_job_config(args)
    out = args.out / "cube.zarr"
    claim_folder(args.out, "evaluate")
    log(f"building the cube of {args.aoi} {args.start}..{args.end} into {out}")
    res = build_tiled(
        load_aoi(args.aoi), args.start, args.end, catalog=cfg.catalog, spec=cfg.cube, out=out,
        overwrite=True, log=log,
    )  # fmt: skip
    if len(res.stores) != 1:
        raise EvaluateError(
            f"the AOI spans {len(res.stores)} UTM zones ({', '.join(map(str, res.stores))}): "
            "evaluate one zone's store with --cube"
        )
    return Path(res.stores[0])


def regions_of(args: argparse.Namespace, scene, attrs: dict, notes: list[str]):
    """(regions, labels): the label classes of ``--labels`` and the DEM's slope classes,
    both (H, W) on the cube's grid; notes say what was placed how, or skipped."""
    from sar2opt.evaluate.labels import load_labels, slope_regions, static_dem
    from sar2opt.grid import GridSpec

    regions: dict = {}
    labels = None
    grid = GridSpec.from_dict(attrs["grid"]) if isinstance(attrs.get("grid"), dict) else None
    if args.labels is not None:
        if grid is None:
            raise EvaluateError("the cube records no grid (attrs 'grid'): cannot warp --labels")
        if grid.shape != scene.clear.shape[1:]:
            raise EvaluateError(f"the cube's grid {grid} is not its pixel shape")
        try:
            labels = load_labels(args.labels, grid, args.label_bins)
        except (ValueError, OSError) as e:
            raise EvaluateError(f"--labels: {e}") from None
        regions |= labels.regions()
        n = int((labels.classes >= 0).sum())
        notes.append(
            f"Labels {Path(str(args.labels)).name}: {labels.source}, nearest neighbour onto "
            f"the cube's grid; {n} labelled px of {labels.classes.size}; classes "
            f"{', '.join(labels.names.values())}."
        )
    if scene.dem is not None:
        res_m = grid.res_m if grid is not None else 10.0
        regions |= slope_regions(static_dem(scene.dem), res_m)
        notes.append(
            f"Per terrain: slope from the cube's dem band at {res_m:g} m pixels "
            "(flat < 2°, gentle 2-10°, steep > 10°)."
        )
    else:
        notes.append("No dem band in this cube: per-slope scores skipped (catalog.dem_collection).")
    return regions, labels


def _progress():
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    return log


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    args.out = jobkit.output_path(args, "evaluate")  # in the root; a user's folder is refused
    if args.cube is not None and not args.cube.exists():
        raise EvaluateError(f"cube not found: {args.cube}")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise EvaluateError(f"checkpoint not found: {args.checkpoint}")
    for lender in args.cloud_masks_from:
        if not lender.exists():
            raise EvaluateError(f"--cloud-masks-from: cube not found: {lender}")
    if not args.seeds:
        raise EvaluateError("need at least one seed")
    import xarray as xr

    from sar2opt.data.inputs import uses_cloudy
    from sar2opt.evaluate.downstream import downstream_summary
    from sar2opt.evaluate.protocol import (
        BASELINES,
        COPY_PRIOR,
        FILLED_FIT,
        MEAN_COLOUR,
        PRIOR_FIT,
        RIDGE_PER_DATE,
        RIDGE_POOLED,
        BlockSplitSpec,
        CloudLaySpec,
        copy_prior_method,
        lent_masks,
        load_scene,
        mean_colour_method,
        prior_fit_methods,
        ridge_method,
        run_protocol,
    )
    from sar2opt.evaluate.report import coverage, write_report
    from sar2opt.evaluate.residual import ResidualSpec, residual_method

    log = _progress()
    meta, aux, input_set = None, None, None
    if args.cube is None:
        if args.checkpoint is not None:
            from sar2opt.train.checkpoint import load_meta

            meta = load_meta(args.checkpoint)
        args.cube = build_cube(args, meta, log)
    try:
        ds = xr.open_zarr(args.cube)
        cube_bands, attrs = [str(b) for b in ds["cube"].band.values], dict(ds.attrs)
    except (ValueError, KeyError, OSError) as e:
        raise EvaluateError(f"cannot evaluate {args.cube}: {e}") from None
    if args.checkpoint is not None:
        from sar2opt.evaluate.holdout import meta_for_cube
        from sar2opt.infer.predictor import checkpoint_input_set, load_models
        from sar2opt.train.checkpoint import load_meta

        load_models([args.checkpoint])  # the inference checks: input set, norm, cube rules
        # a checkpoint of several cubes reads this one by its own build rule (cube_spec)
        meta = meta_for_cube(meta or load_meta(args.checkpoint), args.cube)
        input_set = checkpoint_input_set(meta)
        aux = checkpoint_inputs(meta, cube_bands, attrs)
    try:
        log(f"loading {args.cube.name}")
        out_bands = list(meta["out_bands"]) if meta is not None else None
        scene = load_scene(str(args.cube), out_bands, aux)
        spec = BlockSplitSpec(args.block_px, args.val_frac, args.buffer_px)
        block_split_check(scene, spec)
    except (ValueError, KeyError, OSError) as e:
        raise EvaluateError(f"cannot evaluate {args.cube}: {e}") from None
    bands = list(args.bands or scene.bands)
    unknown = [b for b in bands if b not in scene.bands]
    if unknown:
        raise EvaluateError(
            f"--bands {' '.join(unknown)}: not predicted; choose among {' '.join(scene.bands)}"
        )
    clouds = None
    lent = None
    if args.cloud_removal or (input_set is not None and uses_cloudy(input_set)):
        clouds = CloudLaySpec(buffer_px=args.cloud_buffer_px)
        if args.cloud_masks_from:
            try:
                lent = lent_masks([str(p) for p in args.cloud_masks_from], scene.clear.shape[1:])
            except (ValueError, KeyError, OSError) as e:
                raise EvaluateError(f"--cloud-masks-from: {e}") from None
    methods = {
        MEAN_COLOUR: mean_colour_method(per_date=True),
        RIDGE_PER_DATE: ridge_method(per_date=True),
        RIDGE_POOLED: ridge_method(per_date=False),
    }
    if scene.prior is not None:
        methods[COPY_PRIOR] = copy_prior_method()
        methods[PRIOR_FIT], methods[FILLED_FIT] = prior_fit_methods()
    notes: list[str] = []
    allowed = None
    metrics_csv = None
    if args.checkpoint is not None:
        extra, allowed, more = _checkpoint(args, scene, meta)
        methods.update(extra)
        notes += more
        metrics_csv = args.checkpoint.parent / "metrics.csv"
    if args.residual_steps > 0:
        rs = ResidualSpec(ngf=args.residual_ngf, steps=args.residual_steps)
        methods["SAR + ridge reference: residual U-Net"] = residual_method(rs)
    notes += _standing_notes(cube_bands, scene, clouds is not None, input_set)
    regions, labels = regions_of(args, scene, attrs, notes)
    downstream = None
    if labels is not None:
        from sar2opt.evaluate.downstream import downstream_check

        downstream = downstream_check(labels.classes)
    try:
        result = run_protocol(
            scene, methods, spec, args.seeds, allowed, log=log, bands=bands, clouds=clouds,
            regions=regions, downstream=downstream, lent=lent,
        )  # fmt: skip
    except ValueError as e:
        raise EvaluateError(f"cannot evaluate {args.cube}: {e}") from None

    summary = result.summary()
    cov = coverage(summary, RIDGE_PER_DATE)
    if COPY_PRIOR in summary:
        notes.append(
            f"{COPY_PRIOR}: a prior clear S2 exists at {100 * cov[COPY_PRIOR]:.0f} % of the "
            "scored pixels; its scores cover only those."
        )
    claim_folder(args.out, "evaluate")
    log("writing the report")
    v = write_report(
        args.out / "report.html",
        title=f"sar2opt evaluation: {args.cube.name}",
        result=result,
        scene=scene,
        reference=RIDGE_PER_DATE,
        baselines=BASELINES,
        block_px=args.block_px,
        notes=notes,
        metrics_csv=metrics_csv,
        target_frac=args.target,
    )
    reliability = {k: [asdict(r) for r in rows] for k, rows in result.reliability.items()}
    (args.out / "scores.json").write_text(
        json.dumps(
            {
                "seeds": list(result.seeds),
                "mode": result.mode,
                "summary": summary,
                "coverage": cov,
                "per_seed": result.per_seed,
                "verdict": v,
                "times": list(scene.times),
                "bands": list(result.bands),
                "predicted_bands": list(scene.bands),
                # donor -2: the held-out blocks (a cube without a cloudy date)
                "laid_clouds": [{str(t): d for t, d in p.items()} for p in result.laid],
                "reliability": reliability,
                "regions": result.region_summary(),
                "per_region": result.per_region,
                "downstream": downstream_summary(result.downstream),
                "downstream_per_seed": result.downstream,
            },
            indent=1,
        )
    )
    print("\n" + "\n".join(format_tables(result, cov, v, args.target)))
    print(args.out / "report.html")
    return 0


def format_tables(result, cov: dict, v: dict, target: float) -> list[str]:
    """The printed tables: every method's MAE and SSIM (mean ± std over seeds), MAE gain and
    'SSIM ≥ ridge', coverage; then per region, the downstream check and best-of-N."""
    from sar2opt.evaluate.downstream import downstream_summary
    from sar2opt.evaluate.protocol import RIDGE_PER_DATE as REFERENCE
    from sar2opt.evaluate.report import region_groups, ssim_at_least

    summary = result.summary()
    order = sorted(summary, key=lambda k: summary[k]["mae"][0])
    ref = summary.get(REFERENCE, {}).get("mae", (float("nan"),))[0]
    out = [
        f"{'method':44s} {'MAE mean ± std':>17s} {'SSIM mean ± std':>15s} {'x ridge':>7s} "
        f"{'SSIM ≥ ridge':>12s} {'coverage':>8s}"
    ]
    for k in order:
        (mu, sd), (smu, ssd) = summary[k]["mae"], summary[k]["ssim"]
        ok = ssim_at_least(summary, k, REFERENCE) if k != REFERENCE else None
        word = "-" if ok is None else ("yes" if ok else "no")
        out.append(
            f"{k:44s} {mu:8.4f} ± {sd:.4f} {smu:7.3f} ± {ssd:.3f} {mu / ref:7.2f} "
            f"{word:>12s} {100 * cov[k]:6.0f} %"
        )
    if v["best"] is not None:
        ss = v.get("ssim_ok")
        out.append(
            f"best {v['best']}: {100 * v['gain']:+.1f} % MAE vs {REFERENCE} "
            f"({'meets' if v['passed'] else 'misses'} the {100 * target:.0f} % target); SSIM "
            + ("not judged" if ss is None else ("≥ ridge" if ss else "< ridge"))
        )
    regions = result.region_summary()
    for group, names in region_groups(regions).items():
        out.append(f"\nper {group}: MAE / SSIM (mean over seeds)")
        out.append(f"{'method':44s} " + " ".join(f"{n:>20s}" for n in names))
        for k in order:
            if k in regions:
                cells = [
                    f"{regions[k][n]['mae'][0]:.4f} / {regions[k][n]['ssim'][0]:.3f}" for n in names
                ]
                out.append(f"{k:44s} " + " ".join(f"{c:>20s}" for c in cells))
        first = next(k for k in order if k in regions)
        px = [f"{regions[first][n]['pixels'][0]:.0f} px" for n in names]
        out.append(f"{'pixels / seed':44s} " + " ".join(f"{c:>20s}" for c in px))
    down = downstream_summary(result.downstream)
    if down:
        out.append("\ndownstream: random forest trained on real S2, accuracy on the scored px")
        for k, d in down.items():
            mu, sd = d["accuracy"]
            out.append(f"{k:44s} {mu:8.3f} ± {sd:.3f} {d['pixels'][0]:9.0f} px")
    for k in order:
        if "best_of_n" in summary[k]:
            s = summary[k]
            out.append(
                f"\n{k}: MultiEarth best-of-{s['n_candidates'][0]:.0f} MAE per image "
                f"{s['best_of_n'][0]:.4f} ± {s['best_of_n'][1]:.4f} (picked with the truth) vs "
                f"single output {s['mae_per_image'][0]:.4f} ± {s['mae_per_image'][1]:.4f}"
            )
    return out


def block_split_check(scene, spec) -> None:
    """Fail before any fitting if the cube is smaller than one block or has no clear pixel."""
    h, w = scene.clear.shape[1:]
    if min(h, w) < spec.block_px:
        raise ValueError(f"cube {h}x{w} px is smaller than one {spec.block_px} px block")
    if not scene.clear.any():
        raise ValueError("cube has no clear optical pixel to score against")


def _standing_notes(bands: list[str], scene, cloud_mode: bool, input_set: str | None) -> list[str]:
    notes = [
        "FID not computed: it needs Inception weights, none are stored locally and this job "
        "never downloads any.",
        "Ridge features: VV, VH, VV-VH (dB) and their 5 px local means; alpha 1 on "
        "standardised features. 'per date' fits each acquisition on its own training pixels "
        "(the within-scene protocol).",
    ]
    from sar2opt.data.inputs import uses_cloudy

    if cloud_mode and input_set is not None and uses_cloudy(input_set):
        notes.append(
            f"Cloud-removal scoring is forced for input set {input_set}: the model reads the "
            "same-date S2, which it would copy at a clear held-out block."
        )
    if cloud_mode and scene.cloudy is None:
        notes.append(
            "The cube has no cloud_mask band (cube.cloudy): the laid cloud masks are the "
            "cube's non-clear pixels of the donor date."
        )
    if scene.prior is None:
        notes.append(
            "No prior bands in this cube (cube.prior_days): 'copy the prior clear pixel' skipped."
        )
    if not any(b in bands for b in TERRAIN_BANDS):
        notes.append(
            "No layover/foreshortening/shadow masks in this cube: no scores per radar "
            "geometry (per-slope scores come from the dem band)."
        )
    return notes


if __name__ == "__main__":
    sys.exit(main(parse_args()))
