"""Parameters, GFLOPs per 256 x 256 tile and CPU tiles/s of every registered model.

Prints a Markdown table (the README's). Each model at its paper defaults (presets.MODELS),
2 SAR bands in, 3 optical bands out, input set S unless --input-set says otherwise. FLOPs
are counted by torch.utils.flop_counter.FlopCounterMode (2 per multiply-add; convolutions,
matmuls, attention); element-wise ops are not counted. Throughput: generator forward in
eval mode under torch.inference_mode, batch 1, median of --reps runs after one warm-up, on
the threads torch is given (--threads).

    .venv/bin/python benchmarks/bench_models.py [--threads 2] [--reps 3] [--models a,b]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sar2opt.data.inputs import input_channels
from sar2opt.models import build_discriminator, build_generator, n_params
from sar2opt.models.presets import MODELS, preset_specs

TILE_PX = 256


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Forward GFLOPs of ``model(x)``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 1e9


def tiles_per_s(model: torch.nn.Module, x: torch.Tensor, reps: int) -> float:
    with torch.inference_mode():
        model(x)  # warm-up: allocations, oneDNN kernel selection
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--input-set", default="S")
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n_sar, n_opt = 2, 3
    in_ch, dem_ch = input_channels(a.input_set, n_sar, n_opt)
    x = torch.randn(1, in_ch, TILE_PX, TILE_PX)
    print(f"torch {torch.__version__}, {a.threads} CPU threads, input set {a.input_set}, "
          f"{TILE_PX} x {TILE_PX} px, {n_sar} -> {n_opt} bands")  # fmt: skip
    print()
    print("| model | generator | discriminator | G params (M) | D params (M) "
          "| G GFLOPs / tile | CPU tiles/s |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|")
    for name in a.models.split(","):
        spec, _ = preset_specs(name, input_set=a.input_set)
        gen = build_generator(spec, in_ch, n_opt, dem_ch).eval()
        disc = build_discriminator(spec, in_ch + n_opt)
        d_m = f"{n_params(disc) / 1e6:.2f}" if disc is not None else "-"
        gen_name = spec.generator + (f" + {spec.refine}" if spec.refine != "none" else "")
        print(
            f"| {name} | {gen_name} | {spec.discriminator} | {n_params(gen) / 1e6:.2f} | {d_m} "
            f"| {gflops(gen, x):.1f} | {tiles_per_s(gen, x, a.reps):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
