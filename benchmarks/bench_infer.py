"""Benchmark wall-to-wall inference: pipeline efficiency, peak memory by AOI area, actor scaling.

On synthetic scenes served by a real STAC API (``generate_scene`` + ``CatalogServer``), with a
randomly initialised generator of the configured size (speed does not depend on training):

* efficiency = end-to-end tiles/s of ``jobs/infer_region.py`` (its ``main()``, Ray already
  up: catalog search, store, Ray Data actor pool reading, predicting and writing strips,
  ledger, STAC) divided by tiles/s of the bare generator forward (the same hypotheses per
  tile, batch size, channels-last weights, in a Ray worker with the actor's CPUs), measured
  just before and just after each job;
* peak memory of the whole job (driver + every Ray process, PSS summed, sampled every
  0.2 s) for an AOI of 1x and 16x the area (and 64x on request);
* scaling: the 16x job with 1 and 2 actors.

The job's fixed start-up (actor process, imports, checkpoint, Ray Data start: seconds) is a
large share of a 16x job's tens of seconds and nothing in a region's hours, so the 64x job
(``--runs 1x,16x,64x``) shows the end-to-end efficiency of a job long enough to amortise it.

    .venv/bin/python benchmarks/bench_infer.py                 # 5.12 km (1x) and 20.48 km (16x)
    .venv/bin/python benchmarks/bench_infer.py --size-km 2.56 --dates 1    # quick look
    .venv/bin/python benchmarks/bench_infer.py --preset pix2pix --runs 16x  # production size
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from memwatch import PeakMem  # benchmarks/ is on sys.path when a script there runs

REPO = Path(__file__).resolve().parents[1]


def _job():
    spec = importlib.util.spec_from_file_location("infer_region", REPO / "jobs/infer_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_checkpoint(out: Path, config: str, sets: list[str] = ()) -> Path:
    from sar2opt.config import load_config
    from sar2opt.train.checkpoint import save_untrained_checkpoint

    return save_untrained_checkpoint(out, load_config(config, list(sets)), git_sha="bench")


def bare_forward(
    ckpt: Path, tile_px: int, batch: int, hypotheses: int, threads: int, seconds: float
) -> float:
    """Tiles/s of the generator alone: ``hypotheses`` forwards of a (batch, 2, tile, tile)."""
    import torch

    from sar2opt.infer.predictor import for_inference
    from sar2opt.train.checkpoint import load_generator

    model = for_inference(load_generator(ckpt)[0])  # channels-last, as the actors run it
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, 2, tile_px, tile_px).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or n < 3:
                for _ in range(hypotheses):
                    model(x)
                n += 1
            return n * batch / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)


def scene(root: Path, size_km: float, dates: int) -> tuple[Path, Path]:
    """A synthetic scene (catalog dir) and an AOI GeoJSON just inside it."""
    from sar2opt.catalog.synthetic import generate_scene, scene_grid
    from sar2opt.grid import lonlat_bounds

    cat = root / f"catalog-{size_km:g}km"
    if not (cat / "items.parquet").exists():
        t0 = time.perf_counter()
        generate_scene(cat, size_km=size_km, n_s1=dates, n_s2=1)
        print(f"  generated {size_km:g} km scene in {time.perf_counter() - t0:.0f} s", flush=True)
    w, s, e, n = lonlat_bounds(scene_grid(size_km))
    mx, my = (e - w) * 0.01, (n - s) * 0.01
    ring = [[w + mx, s + my], [e - mx, s + my], [e - mx, n - my], [w + mx, n - my]]
    aoi = root / f"aoi-{size_km:g}km.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    return cat, aoi


def run_job(job, aoi: Path, ckpt: Path, url: str, out: Path, config: str, sets: list[str]) -> dict:
    """infer_region's main() (Ray already initialised): wall, tiles, peak tree PSS."""
    from sar2opt.infer.ledger import TileLedger

    args = job.parse_args(
        [
            *("--aoi", str(aoi), "--checkpoint", str(ckpt), "--out", str(out)),
            *("--start", "2023-07-01", "--end", "2023-12-31"),
            *("--config", config, "--stac-url", url),
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    shutil.rmtree(out, ignore_errors=True)
    log = io.StringIO()
    with PeakMem() as mem, contextlib.redirect_stdout(log):
        t0 = time.perf_counter()
        code = job.main(args)
        wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"infer_region failed ({code}):\n{log.getvalue()}")
    tiles = len(TileLedger(out).done())
    return {"wall_s": wall, "tiles": tiles, "tiles_per_s": tiles / wall, "peak_mb": mem.tree_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=5.12, help="side of the 1x scene")
    p.add_argument("--dates", type=int, default=2, help="S1 acquisitions per scene")
    p.add_argument("--config", default="jobs/configs/demo.yaml", help="model size, tiling")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--work", type=Path, help="keep scenes here (default: a temp dir)")
    p.add_argument("--bare-seconds", type=float, default=10.0)
    p.add_argument(
        "--repeat", type=int, default=1,
        help="run the jobs this many times (in turn), report medians: this VM's speed jumps",
    )  # fmt: skip
    p.add_argument("--preset", help="model preset (sar2opt/models/presets.py), e.g. pix2pix")
    p.add_argument(
        "--runs", default="1x,16x,16x-2actors", help="which jobs to run (comma separated)"
    )
    args = p.parse_args()
    if args.preset:
        from sar2opt.models.presets import MODELS

        args.set = [
            *[f"model.{k}={v}" for k, v in MODELS[args.preset]["model"].items()],
            *args.set,
        ]

    import ray

    from sar2opt.catalog.server import CatalogServer
    from sar2opt.config import load_config

    os.chdir(REPO)
    cfg = load_config(args.config, args.set)
    spec = cfg.infer
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(work / f"ckpt-{args.preset or 'config'}", args.config, args.set)
    hyp = spec.tta_flips
    threads = max(1, round(spec.cpus_per_actor))  # what Ray gives one actor (OMP_NUM_THREADS)
    print(
        f"bench_infer: model {cfg.model.generator} ngf={cfg.model.ngf}, tile {spec.tile_px} px, "
        f"batch {spec.batch_size}, {hyp} hypotheses/tile, {os.cpu_count()} CPUs",
        flush=True,
    )
    wanted = args.runs.split(",")
    sides = {"1x": 1, "16x": 4, "16x-2actors": 4, "64x": 8}
    if not set(wanted) <= set(sides):
        raise SystemExit(f"--runs: choose from {', '.join(sides)}")
    print("scenes:", flush=True)
    scenes = {k: scene(work, args.size_km * k, args.dates) for k in {sides[r] for r in wanted}}

    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    ray.init(address="local", include_dashboard=False, _temp_dir=tmp, log_to_driver=False)

    # The bare forward runs in a Ray worker given the actor's CPUs (same OMP_NUM_THREADS,
    # same process setup), right before and after each job: this VM's speed drifts by up to
    # 30 % within minutes, so each job is compared with the forward measured around it.
    @ray.remote(num_cpus=spec.cpus_per_actor)
    def remote_bare(seconds: float) -> float:
        return bare_forward(ckpt, spec.tile_px, spec.batch_size, hyp, threads, seconds)

    def bare_now() -> float:
        return ray.get(remote_bare.remote(args.bare_seconds))

    full = bare_forward(ckpt, spec.tile_px, spec.batch_size, hyp, os.cpu_count() or 1, 10.0)
    print(f"bare forward on all {os.cpu_count()} cores (driver): {full:.2f} tiles/s", flush=True)
    job = _job()
    runs: dict[str, list[dict]] = {}
    try:
        for name in [n for _ in range(args.repeat) for n in wanted]:
            cat, aoi = scenes[sides[name]]
            actors = 2 if name.endswith("2actors") else spec.num_actors
            before = bare_now()
            with CatalogServer(cat) as server:
                r = run_job(
                    job, aoi, ckpt, server.url, work / f"out-{name}.zarr", args.config,
                    [*args.set, f"infer.num_actors={actors}"],
                )  # fmt: skip
            after = bare_now()
            r["bare"] = (before + after) / 2
            r["efficiency"] = r["tiles_per_s"] / r["bare"]
            runs.setdefault(name, []).append(r)
            print(
                f"job {name:>12}: {r['tiles']} tiles in {r['wall_s']:.1f} s = "
                f"{r['tiles_per_s']:.2f} tiles/s, peak PSS {r['peak_mb']:.0f} MB "
                f"({actors} actor(s)); bare forward {before:.2f} before, {after:.2f} after",
                flush=True,
            )
    finally:
        ray.shutdown()

    # per job: the median run by efficiency (its own figures), the highest peak memory
    results = {}
    for name, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["efficiency"])
        results[name] = dict(rs[len(rs) // 2], peak_mb=max(r["peak_mb"] for r in rs))
        if len(rs) > 1:
            each = ", ".join(f"{r['efficiency']:.2f}" for r in rs)
            print(f"  {name}: efficiency of each run {each}")
    print("\nresults:" + (f" (median of {args.repeat} runs)" if args.repeat > 1 else ""))
    for name in ("16x", "64x"):
        if name in results:
            r = results[name]
            print(
                f"  pipeline efficiency end to end ({name}, {r['tiles']} tiles, "
                f"{spec.num_actors} actor): {r['tiles_per_s']:.2f} / {r['bare']:.2f} tiles/s "
                f"= {r['efficiency']:.2f}  (goal >= 0.8); vs a forward on all "
                f"cores ({full:.2f} tiles/s): {r['tiles_per_s'] / full:.2f}"
            )
    print(f"  work dir: {work}")
    if "16x" not in results or "1x" not in results:
        return
    big1, small1 = results["16x"], results["1x"]
    ref = big1["bare"]
    marginal = (big1["tiles"] - small1["tiles"]) / max(big1["wall_s"] - small1["wall_s"], 1e-9)
    print(
        f"  steady state (16x minus 1x: fixed start-up removed): {marginal:.2f} tiles/s = "
        f"{marginal / ref:.2f} of the bare forward; fixed start-up "
        f"{small1['wall_s'] - small1['tiles'] / marginal:.1f} s"
    )
    m1, m16 = results["1x"]["peak_mb"], big1["peak_mb"]
    print(f"  peak PSS 1x {m1:.0f} MB, 16x {m16:.0f} MB: 16x/1x = {m16 / m1:.2f}  (goal <= 1.2)")
    if "64x" in results:
        m64 = results["64x"]["peak_mb"]
        print(f"  peak PSS 64x {m64:.0f} MB: 64x/1x = {m64 / m1:.2f}")
    if "16x-2actors" in results:
        two = results["16x-2actors"]["tiles_per_s"]
        one = big1["tiles_per_s"]
        print(f"  scaling 1 -> 2 actors: {one:.2f} -> {two:.2f} tiles/s = x{two / one:.2f}")


if __name__ == "__main__":
    main()
