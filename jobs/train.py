"""Train the SAR->optical generator on a cube with Ray Train.

    python jobs/train.py --cube out/cube.zarr --out out/train [--config cfg.yaml]
        [--storage s3://bucket/runs] [--set train.epochs=3 --set train.num_workers=2 ...]

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
    ap.add_argument("--cube", required=True, type=Path, help="Zarr cube from the cube stage")
    jobkit.add_out_arg(ap, "output directory")
    jobkit.add_config_args(ap)
    ap.add_argument(
        "--storage",
        default=None,
        help="Ray Train storage path, local or s3:// (= --set train.storage_path=...)",
    )
    return ap.parse_args(argv)


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
    if not args.cube.exists():
        raise Sar2OptError(f"cube not found: {args.cube}")
    claim_folder(out, "train")

    from sar2opt.train.trainer import train_model

    # The per-epoch progress lines are log records (workers' prints reach the driver twice).
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # RAY_ADDRESS set -> that cluster; otherwise a private local one, with the dashboard's
    # State API that Ray Train's placement-group cleaner polls (without it, it warns each second)
    init_ray(include_dashboard=None)
    print(train_model(args.cube, out, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
