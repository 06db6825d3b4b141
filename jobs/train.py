"""Train the SAR->optical generator on a cube with Ray Train.

    python jobs/train.py --cube out/cube.zarr --out out/train [--config cfg.yaml]
        [--storage s3://bucket/runs] [--set train.epochs=3 --set train.num_workers=2 ...]
    python jobs/train.py --cube a/cube.zarr --cube b/cube.zarr ... --out out/train

Several ``--cube``: one model on the patches of all of them, each cube split into train /
val / test by its own blocks, the normalisation pooled over their train splits; the
checkpoint records each cube's held-out blocks, so ``jobs/evaluate.py --cube B`` scores B
where the model never trained.

Connects to the Ray cluster named by RAY_ADDRESS, else starts a local one. The run's
checkpoints, metrics.csv and TensorBoard events go to ``--storage`` (train.storage_path,
default OUT/ray_results) under train.run_name; running the same command again resumes the
run from its latest checkpoint. Writes OUT/checkpoint (the best epoch), OUT/metrics.csv and
OUT/test_scores.json, and prints the checkpoint directory; user errors are one
``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from sar2opt import jobkit
from sar2opt.errors import Sar2OptError
from sar2opt.paths import claim_folder, resolve_output
from sar2opt.runtime import init_ray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cube",
        dest="cubes",
        action="append",
        required=True,
        type=Path,
        help="Zarr cube from the cube stage; repeat it to train one model on several cubes",
    )
    jobkit.add_out_arg(ap, "output directory")
    jobkit.add_config_args(ap)
    ap.add_argument(
        "--storage",
        default=None,
        help="Ray Train storage path, local or s3:// (= --set train.storage_path=...)",
    )
    args = ap.parse_args(argv)
    args.cube = args.cubes[0]  # the first (or only) cube
    return args


@jobkit.entry
def main(args: argparse.Namespace) -> int:
    if args.storage:
        args.set = [*args.set, f"train.storage_path={args.storage}"]
    cfg = jobkit.load_job_config(args)
    out = jobkit.output_path(args, "train")  # inside $SAR2OPT_OUTPUT_ROOT; ours to reuse
    storage = cfg.train.storage_path
    if storage and "://" not in storage:  # a local storage path is an output too
        train = replace(cfg.train, storage_path=str(resolve_output(storage)))
        cfg = replace(cfg, train=train)
    for cube in args.cubes:
        if not cube.exists():
            raise Sar2OptError(f"cube not found: {cube}")
    claim_folder(out, "train")

    from sar2opt.train.trainer import train_model

    # The per-epoch progress lines are log records (workers' prints reach the driver twice).
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # RAY_ADDRESS set -> that cluster; otherwise a private local one, with the dashboard's
    # State API that Ray Train's placement-group cleaner polls (without it, it warns each second)
    init_ray(include_dashboard=None)
    print(train_model(args.cubes[0] if len(args.cubes) == 1 else args.cubes, out, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
