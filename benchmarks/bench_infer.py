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
* scaling: the 16x job with 1 and 2 actors (``-2actors``), and with one actor given every
  core as torch threads (``-allcores``);
* CPU outside the model: the CPU time (user + system) of the job's whole process tree (driver
  and every Ray process, from /proc, each process sampled every 0.2 s while it lives:
  ``TreeCpu``; the samplers' own threads left out) per tile, minus the CPU per tile of
  the bare forward on the same tiles: reading, normalising, flips and hypothesis statistics,
  composing, compressing and writing, and Ray's own hops, in core-ms per tile. Per tile of
  the whole 16x job, and at steady state (16x minus 1x: the fixed start-up removed);
* the job's tiles/s against the forward on all cores (torch threads = every core), the
  yardstick of a node whose CPUs only feed the model;
* where the start-up goes (``StartupStamps``: the driver's steps and the first actor's, from
  its process start to its first strip) beside its floor here (a fresh ``ray.init`` and one
  actor importing torch and Ray Data);
* ``--inputs S,SO,SC``: the same jobs per input set (an untrained checkpoint of each, on a
  scene with S2 before and around every S1 date): CPU per tile and peak memory side by side.

The job's fixed start-up (actor process, imports, checkpoint, Ray Data start: seconds) is a
large share of a 16x job's tens of seconds and nothing in a region's hours, so the 64x job
(``--runs 1x,16x,64x``) shows the end-to-end efficiency of a job long enough to amortise it.

    .venv/bin/python benchmarks/bench_infer.py                 # 5.12 km (1x) and 20.48 km (16x)
    .venv/bin/python benchmarks/bench_infer.py --size-km 2.56 --dates 1    # quick look
    .venv/bin/python benchmarks/bench_infer.py --preset pix2pix --runs 16x  # production size
    .venv/bin/python benchmarks/bench_infer.py --runs 1x,16x,1x-allcores,16x-allcores
    .venv/bin/python benchmarks/bench_infer.py --runs 1x,16x --inputs S,SO,SC
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
import threading
import time
from pathlib import Path

from memwatch import PeakMem, Sampler  # benchmarks/ is on sys.path when a script there runs

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


def tree_cpu_by_pid(root_pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root_pid`` and each of its live descendants."""
    children: dict[int, list[int]] = {}
    own: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(d))
        own[int(d)] = int(fields[11]) + int(fields[12])  # utime stime
    out, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if pid in own:
            out[pid] = own[pid] / CLK_TCK
    return out


class TreeCpu(Sampler):
    """CPU seconds of a process tree during a ``with`` block, by kind (``KINDS``): each
    process's own CPU time sampled every ``every_s`` (its last sample for one that exits:
    up to ``every_s`` of its CPU is missed), minus what it had at the start. Ray does not
    reap every worker it ends into its ``cutime`` (idle workers it kills), so a process's
    CPU is followed while it lives, not through its parent."""

    def __init__(self, root_pid: int, every_s: float = 0.2) -> None:
        self.root, self.every_s = root_pid, every_s
        self.kind: dict[int, str] = {}
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.cpu_s = 0.0  # CPU time of the sampling thread itself (to leave out of a job's)
        self._stop = threading.Event()

    def _sample(self) -> None:
        for pid, cpu in tree_cpu_by_pid(self.root).items():
            if pid not in self.kind:
                self.kind[pid] = _kind(pid, self.root)
            self.last[pid] = cpu

    def __enter__(self) -> TreeCpu:
        self._sample()
        self.base = dict(self.last)
        return super().__enter__()

    def _run(self) -> None:
        c0 = time.thread_time()
        while not self._stop.wait(self.every_s):
            self._sample()
        self._sample()
        self.cpu_s = time.thread_time() - c0

    def by_kind(self) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for pid, cpu in self.last.items():
            out[self.kind[pid]] += cpu - self.base.get(pid, 0.0)
        out["driver"] -= self.cpu_s  # the sampler is the benchmark's, not the job's
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
    """Tiles/s of the generator alone (``hypotheses`` forwards of a (batch, C, tile, tile), C
    the checkpoint's input channels)
    and its CPU core-ms per tile (this process's CPU time, every torch thread). On CUDA the
    forward runs as ``predictor.forward`` runs it (bf16 autocast)."""
    import contextlib

    import torch

    from sar2opt.data.inputs import input_channels
    from sar2opt.infer.predictor import checkpoint_input_set, for_inference
    from sar2opt.train.checkpoint import load_generator

    model, meta = load_generator(ckpt, device)
    model = for_inference(model)  # channels-last, as the actors
    in_ch = input_channels(
        checkpoint_input_set(meta), len(meta["in_bands"]), len(meta["out_bands"])
    )[0]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, in_ch, tile_px, tile_px, device=device)
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


def scene(root: Path, size_km: float, dates: int, s2: int = 1) -> tuple[Path, Path]:
    """A synthetic scene (catalog dir: ``dates`` S1 and ``s2`` S2 acquisitions) and an AOI
    GeoJSON just inside it."""
    from sar2opt.catalog.synthetic import generate_scene, scene_grid
    from sar2opt.grid import lonlat_bounds

    cat = root / (f"catalog-{size_km:g}km" + (f"-{dates}s1-{s2}s2" if s2 != 1 else ""))
    if not (cat / "items.parquet").exists():
        t0 = time.perf_counter()
        generate_scene(cat, size_km=size_km, n_s1=dates, n_s2=s2)
        print(f"  generated {size_km:g} km scene in {time.perf_counter() - t0:.0f} s", flush=True)
    w, s, e, n = lonlat_bounds(scene_grid(size_km))
    mx, my = (e - w) * 0.01, (n - s) * 0.01
    ring = [[w + mx, s + my], [e - mx, s + my], [e - mx, n - my], [w + mx, n - my]]
    aoi = root / f"aoi-{size_km:g}km.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    return cat, aoi


class StartupStamps:
    """When the job reached each step of its start-up (s from its start): the driver's steps
    (its functions wrapped for the ``with`` block) and the actor's (``run.STARTUP_LOG_ENV``:
    the actors append their stamps to ``log``)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.t: dict[str, float] = {}

    def __enter__(self) -> StartupStamps:
        from sar2opt.infer import region

        self.t0 = time.time()
        self.region = region
        self.saved = {n: getattr(region, n) for n in ("plan_region", "fill_zone", "drain")}
        stamp = self.t.setdefault

        def plan_region(*a, **k):
            out = self.saved["plan_region"](*a, **k)
            stamp("searched S1 and planned", time.time())
            return out

        def fill_zone(*a, **k):
            stamp("searched S2/DEM, created the stores", time.time())
            return self.saved["fill_zone"](*a, **k)

        def drain(finished, *a, **k):
            def stamped():
                stamp("listed the blocks, Ray Data started", time.time())
                for keys in finished:
                    stamp("first strip back in the driver", time.time())
                    yield keys

            return self.saved["drain"](stamped(), *a, **k)

        region.plan_region, region.fill_zone, region.drain = plan_region, fill_zone, drain
        self.log.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        for name, f in self.saved.items():
            setattr(self.region, name, f)
        self.t["job done"] = time.time()

    def breakdown(self) -> dict[str, float]:
        """Each step's time from the job's start, the first actor's too (negative: a worker
        started, or warmed, before the job did it before)."""
        out = {k: v - self.t0 for k, v in self.t.items()}
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        if lines:
            a = min((json.loads(x) for x in lines), key=lambda d: d["called"])
            out["actor: process started"] = a["process"] - self.t0
            out["actor: imported torch, Ray Data, sar2opt"] = max(a["module"], a["torch"]) - self.t0
            out["actor: constructor entered"] = a["init"] - self.t0
            out["actor: model loaded"] = a["predictor"] - self.t0
            out["actor: first strip written"] = a["called"] - self.t0
        return dict(sorted(out.items(), key=lambda kv: kv[1]))


def run_job(
    job, aoi: Path, ckpt: Path, url: str, out: Path, config: str, sets: list[str],
    start: str = "2023-07-01", stamps: StartupStamps | None = None,
) -> dict:  # fmt: skip
    """infer_region's main() (Ray already initialised): wall, tiles, peak tree PSS."""
    from sar2opt.infer.ledger import TileLedger

    args = job.parse_args(
        [
            *("--aoi", str(aoi), "--checkpoint", str(ckpt), "--out", str(out)),
            *("--start", start, "--end", "2023-12-31"),
            *("--config", config, "--stac-url", url),
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    for old in (out, out.with_name(out.name + ".partial")):  # a killed run leaves a partial
        shutil.rmtree(old, ignore_errors=True)
    log = io.StringIO()
    with PeakMem() as mem, contextlib.redirect_stdout(log):
        with TreeCpu(os.getpid()) as tree, stamps or contextlib.nullcontext():
            t0 = time.perf_counter()
            code = job.main(args)
            wall = time.perf_counter() - t0
            time.sleep(1.0)  # the pool's actors end after the job: their last CPU counts
    by_kind = tree.by_kind()
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


FLOOR_SCRIPT = """
import os, sys, tempfile, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(address="local", include_dashboard=False, log_to_driver=False,
         _temp_dir=tempfile.mkdtemp(prefix="r", dir="/tmp"))
t2 = time.perf_counter()

@ray.remote(num_cpus=float(sys.argv[1]))
class Bare:
    def __init__(self):
        import torch, ray.data  # what any inference actor imports
    def ready(self):
        return os.getpid()

ray.get(Bare.remote().ready.remote())
t3 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f}")
"""


def startup_floor(cpus: float) -> tuple[float, float, float]:
    """The floor of a job's start-up here, in a fresh process: ``import ray``, a local
    ``ray.init``, then one actor (``cpus`` CPUs) that imports torch and Ray Data, in s."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, str(cpus)],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )  # fmt: skip
    a, b, c = map(float, out.stdout.split()[-3:])
    return a, b, c


#: Side of the scene of each job size, in multiples of --size-km.
SIDES = {"1x": 1, "16x": 4, "64x": 8}
#: Job variants: the config's pool; two actors; one actor with every core (torch threads).
VARIANTS = ("", "2actors", "allcores")


def parse_run(name: str) -> tuple[str, str]:
    """``16x-allcores`` -> (``16x``, ``allcores``)."""
    size, _, variant = name.partition("-")
    if size not in SIDES or variant not in VARIANTS:
        choices = [f"{k}-{v}" if v else k for k in SIDES for v in VARIANTS]
        raise SystemExit(f"--runs: {name!r}: choose from {', '.join(choices)}")
    return size, variant


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
        "--runs", default="1x,16x,16x-2actors",
        help="jobs to run (comma separated): 1x, 16x, 64x, each optionally -2actors (two "
        "actors) or -allcores (one actor with every core as torch threads)",
    )  # fmt: skip
    p.add_argument(
        "--inputs",
        help="input sets to compare (comma separated, e.g. S,SO,SC): each run once per set, "
        "an untrained checkpoint of each, on a scene with S2 before and around each S1 date",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the start-up floor measure")
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
    from sar2opt.infer.run import STARTUP_LOG_ENV

    os.chdir(REPO)
    cfg = load_config(args.config, args.set)
    spec = cfg.infer
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    work.mkdir(parents=True, exist_ok=True)
    input_sets = args.inputs.split(",") if args.inputs else [""]
    ckpts = {}
    for iset in input_sets:
        extra = [f"model.input_set={iset}", "cube.prior_days=30"] if iset else []
        name = f"ckpt-{args.preset or 'config'}" + (f"-{iset}" if iset else "")
        ckpts[iset] = make_checkpoint(work / name, args.config, [*args.set, *extra])
    hyp = spec.tta_flips
    ncpu = os.cpu_count() or 1
    print(
        f"bench_infer: model {cfg.model.generator} ngf={cfg.model.ngf}, tile {spec.tile_px} px, "
        f"batch {spec.batch_size}, {hyp} hypotheses/tile, {ncpu} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    wanted = [parse_run(n) for n in args.runs.split(",")]
    # an input-set comparison needs S2 before each S1 date (the prior) and near it (the
    # same-date S2): 6 S2 dates from 07-03 every 5 days, S1 dates from 07-13 (07-01 skipped)
    s1, s2, start = (args.dates + 1, 6, "2023-07-02") if args.inputs else (args.dates, 1, None)
    print("scenes:", flush=True)
    scenes = {k: scene(work, args.size_km * k, s1, s2) for k in {SIDES[size] for size, _ in wanted}}
    floor = None
    if not args.no_floor:
        floor = startup_floor(spec.cpus_per_actor)
        print(
            f"start-up floor (fresh process): import ray {floor[0]:.1f} s, ray.init "
            f"{floor[1]:.1f} s, one actor importing torch + Ray Data {floor[2]:.1f} s",
            flush=True,
        )

    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    startup_log = work / "startup.jsonl"
    os.environ[STARTUP_LOG_ENV] = str(startup_log)  # the workers inherit it
    ray.init(address="local", include_dashboard=False, _temp_dir=tmp, log_to_driver=False)

    # The bare forward runs in a Ray worker given the actor's CPUs (same OMP_NUM_THREADS,
    # same process setup), right before and after each job: this VM's speed drifts by up to
    # 30 % within minutes, so each job is compared with the forward measured around it.
    device = "cuda" if spec.gpus_per_actor > 0 else "cpu"  # as the job's actors

    @ray.remote
    def remote_bare(ckpt: Path, threads: int, seconds: float) -> tuple[float, float]:
        return bare_forward_cpu(ckpt, spec.tile_px, spec.batch_size, hyp, threads, seconds, device)

    def pool_of(variant: str) -> tuple[int, float]:
        """(actors, CPUs per actor) of a variant."""
        if variant == "2actors":
            return 2, spec.cpus_per_actor
        if variant == "allcores":
            return 1, float(ncpu)
        return spec.num_actors, spec.cpus_per_actor

    def bare_now(ckpt: Path, cpus: float) -> tuple[float, float]:
        threads = max(1, round(cpus))  # what Ray gives one actor (OMP_NUM_THREADS)
        opts = {"num_cpus": cpus, "num_gpus": spec.gpus_per_actor or None}
        return ray.get(remote_bare.options(**opts).remote(ckpt, threads, args.bare_seconds))

    def all_cores(ckpt: Path, seconds: float) -> tuple[float, float]:
        """The forward in this process on every core (this VM's speed drifts: measured
        around each job, as the actor's one)."""
        return bare_forward_cpu(ckpt, spec.tile_px, spec.batch_size, hyp, ncpu, seconds, device)

    full, full_ms = all_cores(ckpts[input_sets[0]], args.bare_seconds)
    print(
        f"bare forward on all {ncpu} cores (driver, {device}): {full:.2f} tiles/s, "
        f"{full_ms:.1f} core-ms/tile",
        flush=True,
    )
    job = _job()
    runs: dict[str, list[dict]] = {}
    stamps: dict[str, list[dict[str, float]]] = {}
    order = [(sz, v, i) for _ in range(args.repeat) for i in input_sets for sz, v in wanted]
    try:
        # one job first, not counted: the first job of a fresh Ray pays its cold start
        # (the first actor imported torch and Ray Data in 8.7 s against 3.6 s for the
        # next, 2026-12-02), and as a 1x job it made that input set's 16x-minus-1x steady
        # state ~16 core-ms a tile too low (S: 9.2 core-s for its 1x job, SC 5.6)
        cat, aoi = scenes[min(scenes)]  # the smallest scene asked for
        with CatalogServer(cat) as server:
            run_job(
                job, aoi, ckpts[input_sets[0]], server.url, work / "out.zarr", args.config,
                list(args.set), start=start or "2023-07-01",
            )  # fmt: skip
        print("warm-up job done (not counted)", flush=True)
        for size, variant, iset in order:
            name = size + (f"-{variant}" if variant else "") + (f"@{iset}" if iset else "")
            cat, aoi = scenes[SIDES[size]]
            actors, cpus = pool_of(variant)
            ckpt = ckpts[iset]
            before, ms_before = bare_now(ckpt, cpus)
            all_before = all_cores(ckpt, args.bare_seconds)[0]
            st = StartupStamps(startup_log) if size == "1x" else None
            with CatalogServer(cat) as server:
                r = run_job(
                    job, aoi, ckpt, server.url, work / "out.zarr", args.config,
                    [*args.set, f"infer.num_actors={actors}", f"infer.cpus_per_actor={cpus}"],
                    start=start or "2023-07-01", stamps=st,
                )  # fmt: skip
            after, ms_after = bare_now(ckpt, cpus)
            r["full"] = (all_before + all_cores(ckpt, args.bare_seconds)[0]) / 2
            r["ratio_full"] = r["tiles_per_s"] / r["full"]
            r["bare"] = (before + after) / 2
            r["bare_ms"] = (ms_before + ms_after) / 2
            r["efficiency"] = r["tiles_per_s"] / r["bare"]
            r["cpu_ms"] = 1e3 * r["cpu_s"] / r["tiles"]
            runs.setdefault(name, []).append(r)
            print(
                f"job {name:>12}: {r['tiles']} tiles in {r['wall_s']:.1f} s = "
                f"{r['tiles_per_s']:.2f} tiles/s, peak PSS {r['peak_mb']:.0f} MB "
                f"({actors} actor(s) x {cpus:g} CPU); bare forward {before:.2f} before, "
                f"{after:.2f} after; tree CPU {r['cpu_s']:.1f} s = {r['cpu_ms']:.1f} "
                f"core-ms/tile (forward {r['bare_ms']:.1f}); load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if st is not None:
                b = st.breakdown()
                stamps.setdefault(name, []).append(b)
                print("  start-up: " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
    finally:
        ray.shutdown()
    report(args, spec, ncpu, full, runs, stamps, floor, input_sets)


def med(rs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in rs))


def steady(small: list[dict], big: list[dict]) -> dict[str, float]:
    """Medians over the repeats of the steady state (each repeat's big job minus its small
    one, side by side) and of the fixed start-up (the small job minus its tiles at that rate)."""
    pairs = []
    for s, b in zip(small, big, strict=False):
        d_tiles = b["tiles"] - s["tiles"]
        rate = d_tiles / max(b["wall_s"] - s["wall_s"], 1e-9)
        cpu_tile = 1e3 * (b["cpu_s"] - s["cpu_s"]) / d_tiles
        pairs.append(
            {
                "rate": rate,
                "of_bare": rate / b["bare"],
                "of_full": rate / b["full"],
                "cpu_tile": cpu_tile,
                "forward": b["bare_ms"],
                "outside": cpu_tile - b["bare_ms"],
                "start_s": s["wall_s"] - s["tiles"] / rate,
                "start_cpu": s["cpu_s"] - s["tiles"] * cpu_tile / 1e3,
                "mem": b["peak_mb"] / s["peak_mb"],
                **{k: 1e3 * (b[f"cpu_s {k}"] - s[f"cpu_s {k}"]) / d_tiles for k in KINDS},
            }
        )
    out = {k: med(pairs, k) for k in pairs[0]}
    out["each_outside"] = [p["outside"] for p in pairs]
    out["peak_small"] = max(r["peak_mb"] for r in small)
    out["peak_big"] = max(r["peak_mb"] for r in big)
    return out


def report(args, spec, ncpu, full, runs, stamps, floor, input_sets) -> None:
    """The tables: per job, the steady state per pool variant, the start-up, input sets."""
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
    for name, r in results.items():
        if name.startswith("1x"):
            continue
        print(
            f"| job {name} ({r['tiles']} tiles) | {r['wall_s']:.1f} s = {r['tiles_per_s']:.2f} "
            f"tiles/s; vs the bare forward with the actor's CPUs ({r['bare']:.2f} tiles/s) "
            f"{r['efficiency']:.2f}; vs the forward on all {ncpu} cores ({r['full']:.2f} "
            f"tiles/s, around each run) {r['ratio_full']:.2f} | – |"
        )
    print(f"work dir: {args.work or '(temp)'}")
    if args.json:
        args.json.write_text(json.dumps({"full_forward": full, "runs": results}, indent=1))

    groups = {}  # steady state of each (variant, input set) with a 1x and a 16x job
    for name in runs:
        if name.startswith("16x") and "1x" + name[3:] in runs:
            key = name[3:].lstrip("-")
            key = key if key and key[0] != "@" else "config" + key
            groups[key] = steady(runs["1x" + name[3:]], runs[name])
    if not groups:
        return
    main_key = next(iter(groups))
    m = groups[main_key]
    each = ", ".join(f"{x:.1f}" for x in m["each_outside"])
    print(
        f"| steady state (16x minus 1x) | {m['rate']:.2f} tiles/s = {m['of_bare']:.2f} of "
        f"the bare forward, {m['of_full']:.2f} of the all-core one | – |"
    )
    out = m["outside"]
    print(
        f"| **CPU outside the forward, steady state** (16x minus 1x, per run: tree - "
        f"forward) | tree {m['cpu_tile']:.1f}, forward {m['forward']:.1f}: "
        f"**{out:.1f} core-ms/tile** (runs {each}) | <= 15 {'met' if out <= 15 else 'MISSED'} |"
    )
    parts = ", ".join(f"{k} {m[k]:.1f}" for k in KINDS)
    print(f"| where the steady-state CPU goes (core-ms/tile) | {parts} | – |")
    print(
        f"| fixed start-up (1x wall - its tiles at the steady rate) | {m['start_s']:.1f} s "
        f"({m['start_cpu']:.1f} core-s) | <= 3 s {'met' if m['start_s'] <= 3 else 'MISSED'} |"
    )
    print(
        f"| peak PSS 16x / 1x | {m['peak_big']:.0f} / {m['peak_small']:.0f} MB = "
        f"{m['peak_big'] / m['peak_small']:.2f} | <= 1.2 "
        f"{'met' if m['peak_big'] / m['peak_small'] <= 1.2 else 'MISSED'} |"
    )
    if "64x" in results and "1x" in results:
        m64, m1 = results["64x"]["peak_mb"], results["1x"]["peak_mb"]
        print(f"| peak PSS 64x / 1x | {m64:.0f} / {m1:.0f} MB = {m64 / m1:.2f} | – |")

    if "16x-2actors" in results and "16x" in results:
        one, two = results["16x"]["tiles_per_s"], results["16x-2actors"]["tiles_per_s"]
        print(f"| scaling 1 -> 2 actors | {one:.2f} -> {two:.2f} tiles/s = x{two / one:.2f} | – |")

    first = next(iter(stamps.values()), [{}])[0]  # its steps, in the order they came
    if first:
        print("\nwhere the start-up goes (1x jobs: s from the job's start, medians):")
        print("| step | " + " | ".join(stamps) + " |\n|---|" + "---|" * len(stamps))
        for step in first:
            cells = [
                f"{statistics.median(b[step] for b in bs):.2f}" if all(step in b for b in bs)
                else "–"
                for bs in stamps.values()
            ]  # fmt: skip
            print(f"| {step} | " + " | ".join(cells) + " |")
        if floor:
            print(
                f"floor here, in a fresh process: import ray {floor[0]:.1f} s + ray.init "
                f"{floor[1]:.1f} s + one actor importing torch and Ray Data {floor[2]:.1f} s"
            )

    if len(groups) > 1 or "allcores" in main_key:
        print("\npool variants (steady state, 16x minus 1x, side by side in this run):")
        print(
            "| pool | tiles/s | vs its bare forward | vs the forward on all cores (goal >= 0.75) "
            "| CPU outside the forward (core-ms/tile) | start-up |\n|---|---|---|---|---|---|"
        )
        for key, g in groups.items():
            print(
                f"| {key} | {g['rate']:.2f} | {g['of_bare']:.2f} | {g['of_full']:.2f} "
                f"{'met' if g['of_full'] >= 0.75 else 'MISSED'} | {g['outside']:.1f} "
                f"(forward {g['forward']:.1f}) | {g['start_s']:.1f} s |"
            )

    if args.inputs:
        print("\ninput sets (steady state, 16x minus 1x; core-ms per tile; side by side):")
        print(
            "| input set | CPU outside the forward | forward | total | outside / S | total / S "
            "| peak PSS 16x / 1x |\n|---|---|---|---|---|---|---|"
        )
        for key, g in groups.items():
            if "@" not in key:
                continue
            pool, iset = key.split("@")
            base = groups.get(f"{pool}@S")  # S with the same pool
            r_out = f"{g['outside'] / base['outside']:.2f}" if base else "–"
            r_tot = f"{g['cpu_tile'] / base['cpu_tile']:.2f}" if base else "–"
            print(
                f"| {iset}{'' if pool == 'config' else f' ({pool})'} "
                f"| {g['outside']:.1f} | {g['forward']:.1f} | {g['cpu_tile']:.1f} | {r_out} | "
                f"{r_tot} | {g['peak_big']:.0f} / {g['peak_small']:.0f} MB = "
                f"{g['peak_big'] / g['peak_small']:.2f} |"
            )
        print("(goal: SO and SC <= 1.5 x S)")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
