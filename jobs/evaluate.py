"""Score a checkpoint on a cube beside two baselines, over spatial block splits and seeds.

    python jobs/evaluate.py --cube out/cube.zarr --checkpoint out/train/checkpoint --out out/eval
        [--seeds 0 1 2] [--block-px 32] [--val-frac 0.5] [--residual-steps 300]

Methods: the checkpoint (held-out blocks drawn only where it never trained: its validation
strip), the constant train-mean colour and the ridge fit per date (baselines), ridge pooled
over dates, and 'SAR + scene-fit reference' (a small U-Net correcting the per-date ridge,
refitted per seed). Writes ``report.html`` and ``scores.json``; user errors are one
``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sar2opt import jobkit
from sar2opt.errors import Sar2OptError
from sar2opt.paths import claim_folder

REFERENCE = "ridge per date (baseline)"
MEAN = "mean colour per date (baseline)"
BASELINES = (REFERENCE, MEAN, "ridge pooled (baseline)")
TERRAIN_BANDS = ("layover", "foreshortening", "shadow", "non_distorted")


class EvaluateError(Sar2OptError):
    """The cube or checkpoint cannot be evaluated as asked."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", required=True, type=Path, help="Zarr cube from the cube stage")
    ap.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory")
    jobkit.add_out_arg(ap, "folder for report.html, scores.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--block-px", type=int, default=32, help="side of a held-out block")
    ap.add_argument("--val-frac", type=float, default=0.5, help="fraction of candidate blocks")
    ap.add_argument("--buffer-px", type=int, default=8, help="ring kept out of training")
    ap.add_argument("--residual-steps", type=int, default=300, help="0: skip the residual net")
    ap.add_argument("--residual-ngf", type=int, default=16)
    ap.add_argument("--target", type=float, default=0.15, help="MAE gain over ridge to pass")
    return ap.parse_args(argv)


def _checkpoint(args: argparse.Namespace, scene) -> tuple[dict, object, list[str]]:
    """Methods from the checkpoint, the allowed block area, and notes."""

    from sar2opt.config import PatchSpec, config_from_dict
    from sar2opt.data.index import split_pixels
    from sar2opt.evaluate.protocol import fixed_method
    from sar2opt.infer.predictor import predict
    from sar2opt.train.checkpoint import load_generator

    model, meta = load_generator(args.checkpoint)
    if list(meta["out_bands"]) != list(scene.bands):
        raise EvaluateError(
            f"checkpoint predicts {meta['out_bands']} but the cube has {list(scene.bands)}"
        )
    pred = predict(model, scene.sar_db, meta["norm"])
    try:
        pspec = config_from_dict(meta.get("config") or {}, saved=True).patches
    except Sar2OptError:
        pspec = PatchSpec()
    h, w = scene.clear.shape[1:]
    # The blocks the checkpoint's patch index kept out of training (same cube, same split).
    split = "test" if pspec.test_frac > 0 else "val"
    try:
        allowed = split_pixels(h, w, pspec, split)
    except Sar2OptError as e:
        raise EvaluateError(f"cannot rebuild the checkpoint's split on this cube: {e}") from None
    if not allowed.any():
        raise EvaluateError(f"the checkpoint's patch index has no {split} block on this cube")
    name = f"checkpoint {meta['model'].get('generator', '?')} (epoch {meta.get('epoch', '?')})"
    note = (
        f"Held-out blocks are drawn only inside the {split} blocks of the checkpoint's patch "
        f"index ({int(allowed.sum())} px; patches.block_px {pspec.block_px}, split_seed "
        f"{pspec.split_seed}), which it never trained on, so its score is honest; the "
        "baselines and the residual net are refitted per seed on everything outside the "
        "held-out blocks."
    )
    return {name: fixed_method(pred)}, allowed, [note]


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    args.out = jobkit.output_path(args, "evaluate")  # in the root; a user's folder is refused
    if not args.cube.exists():
        raise EvaluateError(f"cube not found: {args.cube}")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise EvaluateError(f"checkpoint not found: {args.checkpoint}")
    if not args.seeds:
        raise EvaluateError("need at least one seed")
    from sar2opt.evaluate.protocol import (
        BlockSplitSpec,
        load_scene,
        mean_colour_method,
        ridge_method,
        run_protocol,
    )
    from sar2opt.evaluate.report import write_report
    from sar2opt.evaluate.residual import ResidualSpec, residual_method

    try:
        scene = load_scene(str(args.cube))
        spec = BlockSplitSpec(args.block_px, args.val_frac, args.buffer_px)
        block_split_check(scene, spec)
    except (ValueError, KeyError, OSError) as e:
        raise EvaluateError(f"cannot evaluate {args.cube}: {e}") from None
    methods = {
        MEAN: mean_colour_method(per_date=True),
        REFERENCE: ridge_method(per_date=True),
        "ridge pooled (baseline)": ridge_method(per_date=False),
    }
    notes: list[str] = []
    allowed = None
    metrics_csv = None
    if args.checkpoint is not None:
        extra, allowed, more = _checkpoint(args, scene)
        methods.update(extra)
        notes += more
        metrics_csv = args.checkpoint.parent / "metrics.csv"
    if args.residual_steps > 0:
        rs = ResidualSpec(ngf=args.residual_ngf, steps=args.residual_steps)
        methods["SAR + ridge reference: residual U-Net"] = residual_method(rs)
    notes += _standing_notes(args.cube)
    try:
        result = run_protocol(scene, methods, spec, args.seeds, allowed, log=print)
    except ValueError as e:
        raise EvaluateError(f"cannot evaluate {args.cube}: {e}") from None

    claim_folder(args.out, "evaluate")
    v = write_report(
        args.out / "report.html",
        title=f"sar2opt evaluation: {args.cube.name}",
        result=result,
        scene=scene,
        reference=REFERENCE,
        baselines=BASELINES,
        block_px=args.block_px,
        notes=notes,
        metrics_csv=metrics_csv,
        target_frac=args.target,
    )
    summary = result.summary()
    (args.out / "scores.json").write_text(
        json.dumps(
            {
                "seeds": list(result.seeds),
                "summary": summary,
                "per_seed": result.per_seed,
                "verdict": v,
                "times": list(scene.times),
                "bands": list(scene.bands),
            },
            indent=1,
        )
    )
    print(f"\n{'method':44s} {'MAE mean ± std':>20s}")
    for k in sorted(summary, key=lambda k: summary[k]["mae"][0]):
        mu, sd = summary[k]["mae"]
        print(f"{k:44s} {mu:10.4f} ± {sd:.4f}")
    if v["best"] is not None:
        print(
            f"best {v['best']}: {100 * v['gain']:+.1f} % MAE vs {REFERENCE} "
            f"({'meets' if v['passed'] else 'misses'} the {100 * args.target:.0f} % target)"
        )
    print(args.out / "report.html")
    return 0


def block_split_check(scene, spec) -> None:
    """Fail before any fitting if the cube is smaller than one block or has no clear pixel."""
    h, w = scene.clear.shape[1:]
    if min(h, w) < spec.block_px:
        raise ValueError(f"cube {h}x{w} px is smaller than one {spec.block_px} px block")
    if not scene.clear.any():
        raise ValueError("cube has no clear optical pixel to score against")


def _standing_notes(cube_path: Path) -> list[str]:
    import xarray as xr

    bands = [str(b) for b in xr.open_zarr(cube_path)["cube"].band.values]
    notes = [
        "FID not computed: it needs Inception weights, none are stored locally and this job "
        "never downloads any.",
        "Ridge features: VV, VH, VV-VH (dB) and their 5 px local means; alpha 1 on "
        "standardised features. 'per date' fits each acquisition on its own training blocks "
        "(the within-scene protocol).",
    ]
    if not any(b in bands for b in TERRAIN_BANDS):
        notes.append(
            "No layover/foreshortening/shadow masks in this cube: per-terrain scores skipped "
            "(sar2opt.evaluate.metrics.region_scores computes them when masks exist)."
        )
    return notes


if __name__ == "__main__":
    sys.exit(main(parse_args()))
