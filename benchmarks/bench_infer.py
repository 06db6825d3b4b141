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
* scaling: the 16x job with 1 and 2 actors;
* CPU outside the model: the CPU time (user + system) of the job's whole process tree (driver
  and every Ray process, from /proc, dead children included through their parent's
  ``cutime``; the memory sampler's own thread left out) per tile, minus the CPU per tile of
  the bare forward on the same tiles: reading, normalising, flips and hypothesis statistics,
  composing, compressing and writing, and Ray's own hops, in core-ms per tile. Per tile of
  the whole 16x job, and at steady state (16x minus 1x: the fixed start-up removed);
* the job's tiles/s against the forward on all cores (torch threads = every core), the
  yardstick of a node whose CPUs only feed the model.

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
import statistics
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


CLK_TCK = os.sysconf("SC_CLK_TCK")


#: Process kinds of the job's tree, by command line (``tree_cpu_s``).
KINDS = ("driver", "Ray workers", "Ray system", "catalog server")


def _kind(pid: int, root_pid: int) -> str:
    if pid == root_pid:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return "Ray system"
    if cmd.startswith(b"ray::") or b"default_worker.py" in cmd:
        return "Ray workers"
    return "catalog server" if b"rustac" in cmd else "Ray system"


def tree_cpu_s(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``root_pid`` and its descendants by kind (``KINDS``).
    Children that have exited count through their parent's ``cutime``/``cstime``: Ray
    workers through the raylet's, so a raylet's reaped children are counted as workers."""
    children: dict[int, list[int]] = {}
    own: dict[int, int] = {}
    reaped: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(d)
        children.setdefault(int(fields[1]), []).append(pid)
        own[pid] = int(fields[11]) + int(fields[12])  # utime stime
        reaped[pid] = int(fields[13]) + int(fields[14])  # cutime cstime
    out = dict.fromkeys(KINDS, 0.0)
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        kind = _kind(pid, root_pid)
        out[kind] += own.get(pid, 0) / CLK_TCK
        dead = "Ray workers" if kind == "Ray system" else kind
        out[dead] += reaped.get(pid, 0) / CLK_TCK
    return out


def bare_forward(
    ckpt: Path, tile_px: int, batch: int, hypotheses: int, threads: int, seconds: float
) -> float:
    """Tiles/s of the generator alone: ``hypotheses`` forwards of a (batch, 2, tile, tile)."""
    return bare_forward_cpu(ckpt, tile_px, batch, hypotheses, threads, seconds)[0]


def bare_forward_cpu(
    ckpt: Path,
    tile_px: int,
    batch: int,
    hypotheses: int,
    threads: int,
    seconds: float,
    device: str = "cpu",
) -> tuple[float, float]:
    """Tiles/s of the generator alone (``hypotheses`` forwards of a (batch, 2, tile, tile))
    and its CPU core-ms per tile (this process's CPU time, every torch thread). On CUDA the
    forward runs as ``predictor.forward`` runs it (bf16 autocast)."""
    import contextlib

    import torch

    from sar2opt.infer.predictor import for_inference
    from sar2opt.train.checkpoint import load_generator

    model = for_inference(load_generator(ckpt, device)[0])  # channels-last, as the actors
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, 2, tile_px, tile_px, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.startswith("cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        with torch.inference_mode(), amp:
            model(x)  # warm-up
            sync()
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds or n < 3:
                for _ in range(hypotheses):
                    model(x)
                n += 1
            sync()
            cpu = time.process_time() - c0
            return n * batch / (time.perf_counter() - t0), 1e3 * cpu / (n * batch)
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
    for old in (out, out.with_name(out.name + ".partial")):  # a killed run leaves a partial
        shutil.rmtree(old, ignore_errors=True)
    log = io.StringIO()
    with PeakMem() as mem, contextlib.redirect_stdout(log):
        t0, c0 = time.perf_counter(), tree_cpu_s(os.getpid())
        code = job.main(args)
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # let Ray reap the pool's actors, so their CPU shows in cutime
        c1 = tree_cpu_s(os.getpid())
        by_kind = {k: c1[k] - c0[k] for k in KINDS}
        by_kind["driver"] -= mem.cpu_s  # the memory sampler is the benchmark's, not the job's
        cpu = sum(by_kind.values())
    if code != 0:
        raise SystemExit(f"infer_region failed ({code}):\n{log.getvalue()}")
    tiles = len(TileLedger(out).done())
    return {
        "wall_s": wall,
        "tiles": tiles,
        "tiles_per_s": tiles / wall,
        "peak_mb": mem.tree_mb,
        "cpu_s": cpu,
        **{f"cpu_s {k}": v for k, v in by_kind.items()},
    }


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
    p.add_argument("--json", type=Path, help="also write the medians here (gpu_check.py)")
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
    device = "cuda" if spec.gpus_per_actor > 0 else "cpu"  # as the job's actors

    @ray.remote(num_cpus=spec.cpus_per_actor, num_gpus=spec.gpus_per_actor or None)
    def remote_bare(seconds: float) -> tuple[float, float]:
        return bare_forward_cpu(ckpt, spec.tile_px, spec.batch_size, hyp, threads, seconds, device)

    def bare_now() -> tuple[float, float]:
        return ray.get(remote_bare.remote(args.bare_seconds))

    ncpu = os.cpu_count() or 1

    def all_cores(seconds: float) -> tuple[float, float]:
        """The forward in this process on every core (this VM's speed drifts: measured
        around each job, as the actor's one)."""
        return bare_forward_cpu(ckpt, spec.tile_px, spec.batch_size, hyp, ncpu, seconds, device)

    full, full_ms = all_cores(args.bare_seconds)
    print(
        f"bare forward on all {ncpu} cores (driver, {device}): {full:.2f} tiles/s, "
        f"{full_ms:.1f} core-ms/tile",
        flush=True,
    )
    job = _job()
    runs: dict[str, list[dict]] = {}
    try:
        for name in [n for _ in range(args.repeat) for n in wanted]:
            cat, aoi = scenes[sides[name]]
            actors = 2 if name.endswith("2actors") else spec.num_actors
            before, ms_before = bare_now()
            all_before = all_cores(args.bare_seconds)[0]
            with CatalogServer(cat) as server:
                r = run_job(
                    job, aoi, ckpt, server.url, work / f"out-{name}.zarr", args.config,
                    [*args.set, f"infer.num_actors={actors}"],
                )  # fmt: skip
            after, ms_after = bare_now()
            r["full"] = (all_before + all_cores(args.bare_seconds)[0]) / 2
            r["ratio_full"] = r["tiles_per_s"] / r["full"]
            r["bare"] = (before + after) / 2
            r["bare_ms"] = (ms_before + ms_after) / 2
            r["efficiency"] = r["tiles_per_s"] / r["bare"]
            r["cpu_ms"] = 1e3 * r["cpu_s"] / r["tiles"]
            runs.setdefault(name, []).append(r)
            print(
                f"job {name:>12}: {r['tiles']} tiles in {r['wall_s']:.1f} s = "
                f"{r['tiles_per_s']:.2f} tiles/s, peak PSS {r['peak_mb']:.0f} MB "
                f"({actors} actor(s)); bare forward {before:.2f} before, {after:.2f} after; "
                f"tree CPU {r['cpu_s']:.1f} s = {r['cpu_ms']:.1f} core-ms/tile "
                f"(forward {r['bare_ms']:.1f}); load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        ray.shutdown()

    def med(rs: list[dict], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    # per job: the median of each measure over its runs, the highest peak memory
    results = {}
    for name, rs in runs.items():
        keys = ("wall_s", "tiles_per_s", "bare", "bare_ms", "efficiency", "cpu_s", "cpu_ms")
        keys += ("full", "ratio_full")
        keys += tuple(f"cpu_s {k}" for k in KINDS)
        results[name] = {k: med(rs, k) for k in keys}
        results[name].update(tiles=rs[0]["tiles"], peak_mb=max(r["peak_mb"] for r in rs))
        if len(rs) > 1:
            each = ", ".join(f"{r['efficiency']:.2f}" for r in rs)
            print(f"  {name}: efficiency of each run {each}")
    print("\nresults:" + (f" (medians of {args.repeat} runs)" if args.repeat > 1 else ""))
    print("| measure | value | goal |\n|---|---|---|")
    for name in ("16x", "64x"):
        if name in results:
            r = results[name]
            print(
                f"| job {name} ({r['tiles']} tiles, {spec.num_actors} actor, "
                f"{threads} torch thread(s)) | {r['wall_s']:.1f} s = {r['tiles_per_s']:.2f} "
                f"tiles/s | – |"
            )
            print(
                f"| efficiency vs the bare forward with the actor's CPUs ({r['bare']:.2f} "
                f"tiles/s) | {r['efficiency']:.2f} | – |"
            )
            ratio = r["ratio_full"]
            print(
                f"| ratio vs the forward on all {ncpu} cores ({r['full']:.2f} tiles/s, "
                f"around each run) | {ratio:.2f} | >= 0.75 {'met' if ratio >= 0.75 else 'MISSED'} |"
            )
            out = r["cpu_ms"] - r["bare_ms"]
            print(
                f"| CPU outside the forward, whole job | {r['cpu_ms']:.1f} - "
                f"{r['bare_ms']:.1f} = {out:.1f} core-ms/tile | – |"
            )
    print(f"work dir: {work}")
    if args.json:
        args.json.write_text(json.dumps({"full_forward": full, "runs": results}, indent=1))
    if "16x" not in results or "1x" not in results:
        return
    big1 = results["16x"]
    # steady state per repeat (its 16x run minus its 1x run, taken side by side), then medians
    pairs = []
    for small, big in zip(runs["1x"], runs["16x"], strict=False):
        d_tiles = big["tiles"] - small["tiles"]
        rate = d_tiles / max(big["wall_s"] - small["wall_s"], 1e-9)
        cpu_tile = 1e3 * (big["cpu_s"] - small["cpu_s"]) / d_tiles
        pairs.append(
            {
                "rate": rate,
                "of_bare": rate / big["bare"],
                "of_full": rate / big["full"],
                "cpu_tile": cpu_tile,
                "outside": cpu_tile - big["bare_ms"],
                "start_s": small["wall_s"] - small["tiles"] / rate,
                "start_cpu": small["cpu_s"] - small["tiles"] * cpu_tile / 1e3,
                **{k: 1e3 * (big[f"cpu_s {k}"] - small[f"cpu_s {k}"]) / d_tiles for k in KINDS},
            }
        )
    m = {k: med(pairs, k) for k in pairs[0]}
    each = ", ".join(f"{p['outside']:.1f}" for p in pairs)
    print(
        f"| steady state (16x minus 1x) | {m['rate']:.2f} tiles/s = {m['of_bare']:.2f} of "
        f"the bare forward, {m['of_full']:.2f} of the all-core one | – |"
    )
    out = m["outside"]
    print(
        f"| **CPU outside the forward, steady state** (16x minus 1x, per run: tree - "
        f"forward) | tree {m['cpu_tile']:.1f}, forward {med(runs['16x'], 'bare_ms'):.1f}: "
        f"**{out:.1f} core-ms/tile** (runs {each}) | <= 15 {'met' if out <= 15 else 'MISSED'} |"
    )
    parts = ", ".join(f"{k} {m[k]:.1f}" for k in KINDS)
    print(f"| where the steady-state CPU goes (core-ms/tile) | {parts} | – |")
    print(
        f"| fixed start-up (1x wall - its tiles at the steady rate) | {m['start_s']:.1f} s "
        f"({m['start_cpu']:.1f} core-s) | <= 3 s {'met' if m['start_s'] <= 3 else 'MISSED'} |"
    )
    m1, m16 = results["1x"]["peak_mb"], big1["peak_mb"]
    print(
        f"| peak PSS 16x / 1x | {m16:.0f} / {m1:.0f} MB = {m16 / m1:.2f} | <= 1.2 "
        f"{'met' if m16 / m1 <= 1.2 else 'MISSED'} |"
    )
    if "64x" in results:
        m64 = results["64x"]["peak_mb"]
        print(f"| peak PSS 64x / 1x | {m64:.0f} / {m1:.0f} MB = {m64 / m1:.2f} | – |")
    if "16x-2actors" in results:
        two = results["16x-2actors"]["tiles_per_s"]
        one = big1["tiles_per_s"]
        print(f"| scaling 1 -> 2 actors | {one:.2f} -> {two:.2f} tiles/s = x{two / one:.2f} | – |")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
