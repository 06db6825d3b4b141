"""GPU check: the figures a GPU machine gives, in one short run (``benchmarks/gpu_check.sh``).

Prints, with the commit:

1. the bare generator forward, tiles/s, fp32 vs bf16 (autocast), each contiguous and
   channels-last, for the default model (``jobs/configs/demo.yaml``: U-Net ngf 16, 5 levels)
   and the 8-level U-Net (preset ``pix2pix``: ngf 64), on 256-px tiles;
2. the inference job (``bench_infer.py --runs 1x,16x``, its CLI) with
   ``infer.gpus_per_actor=1``: tiles/s, and its efficiency against the bare forward on the
   same GPU;
3. training samples/s fp32 vs bf16 (``bench_train.py``, its CLI) and the GPU's peak memory
   during each (``nvidia-smi`` sampled: training runs in Ray Train workers);
4. the projected time of one Amazon period (one S1 pass per block: every block of
   ``shared/data/aoi/amazon.geojson`` once) on 16 GPUs, from the job's tiles/s and from the
   bare forward's (the bound when CPUs keep up).

Without CUDA it is the CPU fallback: tiny tiles and models, forwards only, and the two
benchmarks' CLIs checked for every option used here (``--help``), so that part cannot rot
either; it finishes in well under a minute (``tests/unit/test_gpu_check.py`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from memwatch import Sampler  # benchmarks/ is on sys.path when a script there runs

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Blocks of the Amazon AOI (all six zones, 256-px tiles, 64-px overlap), when the AOI file
#: is not there to count them (``bench_driver.py`` / the dry-run plan).
AMAZON_BLOCKS = 1_148_295
AMAZON_AOI = REPO.parent / "shared/data/aoi/amazon.geojson"
GPUS = 16
#: Time limits of the parts (s): with the forwards (~40 s) under gpu_check.sh's 470 s.
JOB_S, TRAIN_S = 220, 95
#: Options of the benchmarks' CLIs this script uses (checked in the CPU fallback).
INFER_OPTS = ("--size-km", "--dates", "--runs", "--set", "--bare-seconds", "--json", "--work")
TRAIN_OPTS = ("--size-px", "--dates", "--patch-px", "--epochs", "--workers", "--gpu")
TRAIN_OPTS += ("--precision",)


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def forward_rate(
    model, tile_px: int, batch: int, device: str, bf16: bool, channels_last: bool, seconds: float
) -> float:
    """Tiles/s of ``model`` on (batch, in, tile, tile) inputs, one configuration."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = model.to(device=device, memory_format=fmt).eval()
    x = torch.randn(batch, m_in(model), tile_px, tile_px, device=device)
    x = x.contiguous(memory_format=fmt)
    cuda = device == "cuda"
    amp = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode(), amp:
        for _ in range(2):
            m(x)  # warm-up: cuDNN's algorithm search, oneDNN's primitives
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            m(x)
            n += 1
        sync()
    return n * batch / (time.perf_counter() - t0)


def m_in(model) -> int:
    """Input channels of a generator (its first convolution's)."""
    import torch

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            return mod.in_channels
    raise ValueError("no convolution in the model")


def build(sets: list[str]):
    from sar2opt.config import load_config
    from sar2opt.models import build_generator

    spec = load_config(str(REPO / "jobs/configs/demo.yaml"), sets).model
    return build_generator(spec, 2, 4, 0)


def forwards(device: str, tile_px: int, batch: int, seconds: float, small: bool) -> list[dict]:
    """The bare forward table: each model x precision x memory format."""
    models = {
        "default (U-Net ngf 16, 5 levels)": [],
        "8-level U-Net (pix2pix, ngf 64)": ["model.ngf=64", "model.depth=8"],
    }
    if small:  # CPU fallback: the same code on tiny nets
        models = {
            "default (U-Net ngf 4, 5 levels)": ["model.ngf=4"],
            "8-level U-Net (ngf 4)": ["model.ngf=4", "model.depth=8"],
        }
    rows = []
    for name, sets in models.items():
        model = build(sets)
        tile = max(tile_px, int(getattr(model, "stride", 32)))
        for bf16 in (False, True):
            for cl in (False, True):
                if bf16 and device == "cpu" and not small:
                    continue  # bf16 on this CPU is emulated: not a figure anyone would use
                r = forward_rate(model, tile, batch, device, bf16, cl, seconds)
                rows.append(
                    {"model": name, "tile": tile, "bf16": bf16, "channels_last": cl, "tiles_s": r}
                )
                print(
                    f"| {name} | {tile} px | {'bf16' if bf16 else 'fp32'} | "
                    f"{'channels-last' if cl else 'contiguous'} | {r:,.1f} |",
                    flush=True,
                )
    return rows


class GpuMem(Sampler):
    """Peak ``memory.used`` (MiB) of GPU 0 by ``nvidia-smi``, sampled twice a second."""

    def __init__(self) -> None:
        self.peak_mib, self._stop = 0.0, threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.split()
                self.peak_mib = max(self.peak_mib, float(out[0]))


def run_cli(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """A benchmark's CLI in a child process: (exit code, stdout + stderr); 124 on timeout."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        p = subprocess.run(
            [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out
    return p.returncode, p.stdout + p.stderr


def check_cli(script: str, options: tuple[str, ...]) -> list[str]:
    """Options of ``options`` that ``script --help`` does not list (the fallback's check)."""
    code, out = run_cli([f"benchmarks/{script}", "--help"], 60)
    if code != 0:
        return [f"{script} --help failed ({code}): {out.strip().splitlines()[-1:]}"]
    return [f"{script} {o}" for o in options if o not in out]


def train_rate(out: str) -> float | None:
    """samples/s from bench_train.py's table: the first number after the worker count on the
    first row under the header that names ``samples/s``."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if "samples/s" in line and i + 1 < len(lines):
            for tok in lines[i + 1].split()[1:]:
                with contextlib.suppress(ValueError):
                    return float(tok)
    return None


def amazon_blocks() -> tuple[int, str]:
    """Blocks of the Amazon AOI (all zones), counted when the AOI file is there."""
    if not AMAZON_AOI.exists():
        return AMAZON_BLOCKS, "recorded count"
    from sar2opt.aoi import load_aoi
    from sar2opt.infer.plan import zone_figures
    from sar2opt.zones import split_zones

    parts = split_zones(load_aoi(AMAZON_AOI), 10.0)
    return sum(zone_figures(p, 256, 64).blocks for p in parts), "counted from the AOI"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="the CPU fallback even with a GPU")
    p.add_argument("--skip-job", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    device = "cuda" if gpu else "cpu"
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if gpu else f"CPU fallback ({os.cpu_count()} CPUs)"
    print(f"gpu_check: commit {commit()}, {name}, torch {torch.__version__}", flush=True)

    print("\nbare forward, tiles/s (one hypothesis per tile)")
    print("| model | tile | precision | memory format | tiles/s |\n|---|---|---|---|---|")
    if gpu:
        rows = forwards(device, 256, 16, 3.0, small=False)
    else:
        rows = forwards(device, 32, 2, 0.2, small=True)

    job: dict = {}
    train: dict[str, tuple[float | None, float]] = {}
    problems: list[str] = []
    if not gpu:
        problems += check_cli("bench_infer.py", INFER_OPTS)
        problems += check_cli("bench_train.py", TRAIN_OPTS)
        print(
            "\nCPU fallback: the inference job and training are left out (no GPU); "
            + ("their CLIs take every option used here" if not problems else "")
        )
    if gpu and not args.skip_job:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            out_json = Path(tmp) / "infer.json"
            cpus = max(1, min(8, (os.cpu_count() or 2) // 2))
            code, out = run_cli(
                [
                    "benchmarks/bench_infer.py", "--size-km", "7.68", "--dates", "2",
                    "--runs", "1x,16x", "--bare-seconds", "3", "--json", str(out_json),
                    "--work", str(Path(tmp) / "work"),
                    "--set", "infer.gpus_per_actor=1", "--set", f"infer.cpus_per_actor={cpus}",
                    "--set", "infer.calls_per_actor=4", "--set", "infer.batch_size=16",
                ],
                JOB_S,
            )  # fmt: skip
            if code == 0 and out_json.exists():
                job = json.loads(out_json.read_text())
            else:
                problems.append(f"inference job failed ({code}): {out[-600:]}")
            print("\ninference job (bench_infer.py, gpus_per_actor 1):")
            print("\n".join(line for line in out.splitlines() if line.startswith(("|", "job"))))
    if gpu and not args.skip_train:
        for prec in ("fp32", "bf16"):
            with GpuMem() as mem:
                code, out = run_cli(
                    [
                        "benchmarks/bench_train.py", "--size-px", "1024", "--dates", "4",
                        "--patch-px", "256", "--epochs", "3", "--workers", "1", "--gpu",
                        "--precision", prec,
                    ],
                    TRAIN_S,
                )  # fmt: skip
            rate = train_rate(out) if code == 0 else None
            train[prec] = (rate, mem.peak_mib)
            if rate is None:
                problems.append(f"training {prec} failed ({code}): {out[-600:]}")

    if train:
        print("\ntraining (bench_train.py, 1 worker, U-Net ngf 16 + PatchGAN, 256-px patches)")
        print("| precision | samples/s | peak GPU memory |\n|---|---|---|")
        for prec, (rate, mib) in train.items():
            shown = f"{rate:,.1f}" if rate is not None else "failed"
            print(f"| {prec} | {shown} | {mib:,.0f} MiB |")

    blocks, how = amazon_blocks()
    best = max(
        (r for r in rows if r["model"].startswith("default") and (r["bf16"] or not gpu)),
        key=lambda r: r["tiles_s"],
    )
    hyp = 2  # infer.tta_flips default: two hypotheses per tile
    print(f"\nprojected Amazon period ({blocks:,} blocks, {how}; one pass each) on {GPUS} GPUs")
    print("| from | tiles/s per GPU | hours |\n|---|---|---|")
    bound = best["tiles_s"] / hyp
    print(
        f"| bare forward, default model, {hyp} hypotheses | {bound:,.1f} | "
        f"{blocks / (GPUS * bound) / 3600:.2f} |"
    )
    big = (job.get("runs") or {}).get("16x")
    if big:
        r = big["tiles_per_s"]
        print(f"| inference job 16x (its efficiency {big['efficiency']:.2f}) | {r:,.1f} | "
              f"{blocks / (GPUS * r) / 3600:.2f} |")  # fmt: skip
    print(f"\ngpu_check: {time.perf_counter() - t_start:.0f} s")
    for line in problems:
        print(f"PROBLEM: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
