"""Benchmark training throughput: samples/s with 1 and 2 Ray Train workers, and the share of
the training pass spent waiting for data (goal: <= 5 % in every epoch, first batch included),
side by side for three ways of feeding the epochs (``--modes``):

* ``stream/in-pass``: as before: the train split streams from the Zarr store every epoch and
  each epoch's stream opens at the start of its training pass;
* ``stream/ahead``: the same stream, opened while the previous epoch validates and saves
  (``train.open_ahead``): the path of a split too large to cache;
* ``cached/ahead``: the default on this cube: the split fits the object store budget
  (``trainer.CACHE_STORE_FRACTION``), is read once, and is served from memory, opened ahead.

A synthetic cube (smooth random SAR in dB, optical = a fixed band mix of it, a cloud) is
written to a Zarr store; ``train_model`` then streams its patches from the store through Ray
Data into a ``TorchTrainer`` exactly as ``jobs/train.py`` does. Per run, figures are the mean
of the epochs after the first (Ray Data and torch warm up in epoch 1), and the table gives the
median over ``--repeats`` runs:

* samples/s: training samples of all workers / wall time of the training pass;
* data share: time the training loop waited for its next batch, the epoch's first batch
  included / time of the training pass, over all workers (the loop's ``data_frac``); "worst
  epoch" is its largest value over those epochs;
* w/o 1st batch: the same without each epoch's first batch (``data_frac_steady``);
* stream start: the epoch's stream from opening to its first batch (``stream_open_s``);
  "ahead" runs it behind the previous epoch's validation and checkpoint, "in-pass" (as
  before) at the start of the training pass, where all of it is waiting;
* epoch s: the whole epoch, validation and checkpoint included.

    .venv/bin/python benchmarks/bench_train.py                     # 1 and 2 workers, CPU
    .venv/bin/python benchmarks/bench_train.py --workers 1 --gpu   # on a GPU node
    .venv/bin/python benchmarks/bench_train.py --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import csv
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
MODES = ("stream/in-pass", "stream/ahead", "cached/ahead")
CACHE_STORE_FRACTION = 0.25  # trainer.CACHE_STORE_FRACTION, the default
SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]


def _smooth(a: np.ndarray, k: int) -> np.ndarray:
    """Box blur of the last two axes (k x k, edge-padded)."""
    pad = k // 2
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    c = np.pad(a.cumsum(-1).cumsum(-2), [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) / (k * k)


def write_cube(path: Path, size_px: int, n_t: int, chunk_px: int = 256, seed: int = 0) -> None:
    """A learnable cube (time, band, y, x): vv, vh (dB), B02..B08 (reflectance), clear."""
    rng = np.random.default_rng(seed)
    z = (_smooth(rng.normal(0, 1, (n_t, 2, size_px, size_px)), 5) * 4).astype(np.float32)
    sar = np.stack([-12 + 3 * z[:, 0], -19 + 3 * z[:, 1]], 1)
    mix = np.array([[0.02, -0.01], [0.03, 0.0], [0.02, 0.02], [0.08, -0.04]], np.float32)
    base = np.array([0.05, 0.07, 0.06, 0.25], np.float32)[None, :, None, None]
    opt = np.clip(base + np.einsum("oc,tchw->tohw", mix, _smooth(z, 3)), 0, 1)
    clear = np.ones((n_t, 1, size_px, size_px), np.float32)
    q = size_px // 8
    clear[0, 0, q : 2 * q, q : 2 * q] = 0  # one cloud
    cube = np.concatenate([sar, opt, clear], 1).astype(np.float32)
    da = xr.DataArray(
        cube,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.datetime64("2024-01-01", "ns") + np.arange(n_t) * np.timedelta64(12, "D"),
            "band": [*SAR, *OPT, "clear"],
            "y": 9e6 - 10.0 * np.arange(size_px) - 5,
            "x": 5e5 + 10.0 * np.arange(size_px) + 5,
        },
    )
    ds = xr.Dataset({"cube": da}, attrs={"sar_bands": SAR, "opt_bands": OPT})
    ds.to_zarr(path, mode="w", encoding={"cube": {"chunks": (1, 1, chunk_px, chunk_px)}})


def run(cube: Path, out: Path, workers: int, mode: str, args: argparse.Namespace) -> dict:
    """One training job; the means over its epochs after the first."""
    import sar2opt.train.trainer as trainer
    from sar2opt.config import load_config

    cached, ahead = (x in ("cached", "ahead") for x in mode.split("/"))
    # The driver decides whether to cache: a budget of 0 makes the split stream.
    trainer.CACHE_STORE_FRACTION = CACHE_STORE_FRACTION if cached else 0.0
    sets = [
        f"patches.patch_px={args.patch_px}", f"patches.stride_px={args.patch_px // 2}",
        f"model.ngf={args.ngf}", f"model.ndf={args.ngf}", f"model.depth={args.depth}",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
        f"train.num_workers={workers}", f"train.use_gpu={str(args.gpu).lower()}",
        f"train.precision={args.precision}", f"patches.block_px={2 * args.patch_px}",
        f"patches.gap_px={args.patch_px // 4}",
        f"train.channels_last={str(args.channels_last).lower()}",
        f"train.open_ahead={str(ahead).lower()}",
    ]  # fmt: skip
    cfg = load_config(None, sets)
    t0 = time.perf_counter()
    trainer.train_model(cube, out, cfg)
    wall = time.perf_counter() - t0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))[1:]  # steady state: epoch 1 warms up

    def col(k: str) -> np.ndarray:
        return np.array([float(r[k]) for r in rows])

    keys = ("samples_per_s", "data_frac", "data_frac_steady", "stream_open_s")
    return {
        "workers": workers,
        **{k: float(col(k).mean()) for k in (*keys, "epoch_s")},
        "data_frac_worst": float(col("data_frac").max()),
        "wall_s": wall,
    }


def median_of(runs: list[dict]) -> dict:
    """Per-figure median over repeated runs of one worker count and mode."""
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-px", type=int, default=1024, help="cube side (10 m pixels)")
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--patch-px", type=int, default=128)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs per worker count and mode")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))
    cube = tmp / "cube.zarr"
    write_cube(cube, args.size_px, args.dates)
    km = args.size_px * 10 / 1000
    ray.init(
        address="local", include_dashboard=False, _temp_dir=str(tmp / "ray"), log_to_driver=False
    )
    runs: dict[tuple[int, str], list[dict]] = {}
    for w in args.workers:
        for i in range(args.repeats):  # modes alternate: a load change hits them alike
            for m in args.modes:
                out = tmp / f"out{w}-{m.replace('/', '-')}-{i}"
                runs.setdefault((w, m), []).append(run(cube, out, w, m, args))
    results = [(m, median_of(r)) for (_, m), r in runs.items()]
    ray.shutdown()

    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\ntraining benchmark: cube {km:g} x {km:g} km ({args.size_px} px), {args.dates} dates, "
        f"patch {args.patch_px} px (split blocks {2 * args.patch_px} px), unet ngf {args.ngf} "
        f"depth {args.depth} + patchgan, batch "
        f"{args.batch_size}/worker, {args.epochs} epochs, precision {args.precision}, "
        f"channels_last {args.channels_last}, {'GPU' if args.gpu else 'CPU'} "
        f"({platform.processor() or platform.machine()}), commit {sha}; "
        f"median of {args.repeats} run(s), each the mean of epochs 2-{args.epochs}"
    )
    print(
        f"{'workers':>7s} {'feed':>14s} {'samples/s':>9s} {'data share':>10s} "
        f"{'worst epoch':>11s} {'w/o 1st batch':>13s} {'stream start s':>14s} "
        f"{'epoch s':>7s} {'job s':>6s}"
    )
    for m, r in results:
        print(
            f"{r['workers']:7.0f} {m:>14s} "
            f"{r['samples_per_s']:9.1f} {100 * r['data_frac']:9.1f}% "
            f"{100 * r['data_frac_worst']:10.1f}% {100 * r['data_frac_steady']:12.1f}% "
            f"{r['stream_open_s']:14.2f} {r['epoch_s']:7.1f} {r['wall_s']:6.1f}"
        )
    print(
        "goal: data share (first batch included) <= 5 % of the training pass in every epoch; "
        "stream/in-pass is how epochs were fed before"
    )


if __name__ == "__main__":
    main()
