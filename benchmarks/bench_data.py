"""Benchmark the training data path: patch index build, reader speed, streaming memory at 1x/10x.

On a synthetic cube store (random SAR/optical, a few clouds, chunked like a real cube):

* index build time (``build_patch_index``, one date and one block-row strip at a time);
* read patches/s of the pure reader (``read_patches``, one process, no Ray);
* iterating ``patch_dataset`` (Ray Data, ``num_cpus`` per read task) over N and 10 x N
  patches (the train split's rows, repeated to reach the count), each in a fresh process
  with its own local Ray: patches/s, peak PSS of the driver, and peak PSS summed over the
  driver and every Ray process it started (sampled every 0.2 s; PSS counts shared pages such
  as the object store once). Flat memory = the 10 x N
  peaks stay near the N peaks.

    .venv/bin/python benchmarks/bench_data.py                    # 1024 px, 4 dates, N = 2000
    .venv/bin/python benchmarks/bench_data.py --n 500 --size-px 512   # quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memwatch import PeakMem  # benchmarks/ is on sys.path when a script there runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]


def write_store(path: Path, size_px: int, n_t: int, chunk_px: int) -> None:
    """A cube store like build.py writes: (time, band, y, x) float32, chunks (1, nb, c, c)."""
    import xarray as xr

    rng = np.random.default_rng(0)
    bands = [*SAR, *OPT, "clear"]
    template = xr.DataArray(
        np.zeros((n_t, len(bands), size_px, size_px), np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.arange(n_t),
            "band": np.array(bands, dtype=object),
            "y": 1e6 - 10.0 * (np.arange(size_px) + 0.5),
            "x": 5e5 + 10.0 * (np.arange(size_px) + 0.5),
        },
    )
    for t in range(n_t):  # one date at a time: the benchmark itself stays small
        d = np.empty((len(bands), size_px, size_px), np.float32)
        d[:2] = rng.normal(-15, 3, (2, size_px, size_px))
        d[2:6] = rng.uniform(0, 0.3, (4, size_px, size_px))
        d[6] = 1.0
        y, x = rng.integers(0, size_px - 200, 2)
        d[6, y : y + 200, x : x + 200] = 0.0  # one cloud per date
        template.data[t] = d
    ds = xr.Dataset({"cube": template}, attrs={"sar_bands": SAR, "opt_bands": OPT})
    ds.to_zarr(path, mode="w", encoding={"cube": {"chunks": (1, len(bands), chunk_px, chunk_px)}})


def child(args: argparse.Namespace) -> None:
    """Iterate patch_dataset over args.rows index rows; print one JSON line of figures."""
    import pandas as pd
    import ray

    from sar2opt.data.stream import patch_dataset

    idx = pd.read_pickle(args.index)
    base = idx[idx["split"] == "train"].reset_index(drop=True)
    rows = base.iloc[np.arange(args.rows) % len(base)].reset_index(drop=True)
    norm = json.loads(args.norm)
    tmp = tempfile.mkdtemp(prefix="bd", dir="/tmp")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = patch_dataset(
        args.store, rows, sar_bands=SAR, opt_bands=OPT, aux={}, norm=norm,
        patch_px=args.patch_px, rows_per_read=args.rows_per_read, num_cpus=args.num_cpus,
        shuffle_seed=0, concurrency=args.concurrency,
    )  # fmt: skip
    n, checksum = 0, 0.0
    with PeakMem() as peak:
        t0 = time.perf_counter()
        for batch in ds.iter_batches(batch_size=32, batch_format="numpy"):
            n += len(batch["sar"])
            checksum += float(batch["opt"][:, :, 0, 0].sum())  # touch the data
        dt = time.perf_counter() - t0
    ray.shutdown()
    print(
        json.dumps(
            {
                "patches": n,
                "s": dt,
                "driver_mb": peak.driver_mb,
                "tree_mb": peak.tree_mb,
                "workers": peak.workers,
                "worker_mb": peak.worker_mb,
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-px", type=int, default=1024)
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--chunk-px", type=int, default=512)
    ap.add_argument("--patch-px", type=int, default=64)
    ap.add_argument("--n", type=int, default=2000, help="patches at 1x (10x runs 10 * n)")
    ap.add_argument("--rows-per-read", type=int, default=32)
    ap.add_argument("--num-cpus", type=float, default=0.25)
    ap.add_argument("--concurrency", type=int, default=None, help="cap on read tasks in flight")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--norm", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    import xarray as xr

    from sar2opt.config import PatchSpec
    from sar2opt.data.index import build_patch_index, split_counts
    from sar2opt.data.stream import norm_stats, read_patches

    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    store = work / "cube.zarr"
    t0 = time.perf_counter()
    write_store(store, args.size_px, args.dates, args.chunk_px)
    print(f"cube store: {args.dates} x 7 x {args.size_px}^2 px, chunks {args.chunk_px} px, "
          f"written in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    cube = xr.open_zarr(store)["cube"]
    spec = PatchSpec(patch_px=args.patch_px, stride_px=args.patch_px // 2, min_clear_frac=0.98)
    t0 = time.perf_counter()
    idx = build_patch_index(cube, SAR, OPT, spec)
    dt_idx = time.perf_counter() - t0
    print(f"build_patch_index: {len(idx)} patches {split_counts(idx)} in {dt_idx:.2f} s "
          f"({args.dates * args.size_px**2 / dt_idx / 1e6:.1f} Mpx-dates/s)")  # fmt: skip
    idx.to_pickle(work / "index.pkl")

    t0 = time.perf_counter()
    norm = norm_stats(store, idx, SAR, OPT, {}, max_patches=2048)
    print(f"norm_stats (<= 2048 train patches): {time.perf_counter() - t0:.2f} s")

    train = idx[idx["split"] == "train"]
    sample = train.sample(n=min(2000, len(train)), random_state=0)
    kw = dict(sar_bands=SAR, opt_bands=OPT, aux={}, norm=norm, patch_px=args.patch_px)
    t0 = time.perf_counter()
    for i in range(0, len(sample), args.rows_per_read):  # locality groups, as the stream reads
        read_patches(store, sample.sort_values(["time", "block", "row", "col"]).iloc[
            i : i + args.rows_per_read], **kw)  # fmt: skip
    dt = time.perf_counter() - t0
    print(f"read_patches, one process: {len(sample) / dt:.0f} patches/s "
          f"({args.rows_per_read} per read, {args.patch_px} px, 7 bands)")  # fmt: skip

    results = {}
    for mult in (1, 10):
        n = args.n * mult
        cmd = [
            sys.executable, __file__, "--child", "--store", str(store),
            "--index", str(work / "index.pkl"), "--norm", json.dumps(norm), "--rows", str(n),
            "--patch-px", str(args.patch_px), "--rows-per-read", str(args.rows_per_read),
            "--num-cpus", str(args.num_cpus),
            *(["--concurrency", str(args.concurrency)] if args.concurrency else []),
        ]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
        results[mult] = json.loads(line)
        assert results[mult]["patches"] == n, results[mult]

    print(f"\npatch_dataset streaming ({args.rows_per_read} rows per read task, "
          f"{args.num_cpus} CPU each, concurrency {args.concurrency}, "
          "local Ray, 2 CPUs):")  # fmt: skip
    print(f"{'patches':>9} {'patches/s':>10} {'driver peak MB':>15} {'driver+Ray peak MB':>19} "
          f"{'Ray workers':>12} {'largest worker MB':>18}   (PSS)")  # fmt: skip
    for r in results.values():
        print(f"{r['patches']:>9} {r['patches'] / r['s']:>10.0f} {r['driver_mb']:>15.0f} "
              f"{r['tree_mb']:>19.0f} {r['workers']:>12} {r['worker_mb']:>18.0f}")  # fmt: skip
    ratio = results[10]["tree_mb"] / results[1]["tree_mb"]
    cap = int(2 / args.num_cpus) if args.concurrency is None else args.concurrency
    print(f"10x / 1x peak PSS (driver+Ray): {ratio:.2f}; at most {cap} read tasks in flight "
          "whatever the index size")  # fmt: skip


if __name__ == "__main__":
    main()
