"""Peak memory and time of one training read task's context references, by chunk size.

A scene-fit model's training stream fits each patch's reference over the window inference
would give it (``data.stream.ReferenceContext``), for every patch of a read task (128 of
them, ``train.trainer.ROWS_PER_READ``), through ``data.stream.window_references``: the fit,
its residual fill and (for the calibration) its error, ``REF_CHUNK`` windows at a time. This
runs that function on one read's worth of random standardised SCO windows (the real recipe's
3 bands, 30 % of the same-date S2 masked), once per chunk size, each in a fresh process, and
prints its peak resident memory beside the floor: the same process after making the inputs,
before any fit. One thread.

    .venv/bin/python benchmarks/bench_context_reference.py [--windows 128] [--window-px 256]
        [--chunks 128 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(windows: int, window_px: int, chunk: int) -> dict:
    """In this process: the floor, then the fits of ``windows`` windows ``chunk`` at a time."""
    import numpy as np
    import torch

    from sar2opt.data import stream
    from sar2opt.models.reference import input_slices

    torch.set_num_threads(1)
    n_opt = 3
    channels = 2 + (n_opt + 1) + n_opt  # SAR, same-date S2 + mask, prior
    rng = np.random.default_rng(0)
    x = rng.standard_normal((windows, channels, window_px, window_px), dtype=np.float32)
    slices = input_slices("SCO", channels, n_opt)
    mask = slices["cloudy"].stop - 1
    x[:, mask] = (rng.random((windows, window_px, window_px)) < 0.3).astype(np.float32)
    floor = _peak_mb()
    stream.REF_CHUNK = chunk
    t0 = time.perf_counter()
    stream.window_references(x, slices, n_opt, with_error=True)
    return {"chunk": chunk, "floor_mb": floor, "peak_mb": _peak_mb(), "s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=128, help="windows of one read task")
    ap.add_argument("--window-px", type=int, default=256)
    ap.add_argument("--chunks", type=int, nargs="+", default=[128, 16])
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.windows, args.window_px, args.one)))
        return
    rows = []
    for chunk in args.chunks:
        cmd = [sys.executable, __file__, "--windows", str(args.windows), "--window-px",
               str(args.window_px), "--one", str(chunk)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.windows} context windows of {args.window_px} px, SCO, fit + fill + error, "
          "one thread, each chunk size in a fresh process")  # fmt: skip
    print("| windows at once | peak RSS MB | inputs alone MB | above them MB | s | s / first |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        above = r["peak_mb"] - r["floor_mb"]
        print(f"| {r['chunk']} | {r['peak_mb']:.0f} | {r['floor_mb']:.0f} | {above:.0f} | "
              f"{r['s']:.1f} | {r['s'] / rows[0]['s']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
