"""Benchmark the inference driver at continental scale: one full Amazon zone-date, no pixels.

The real driver path of ``infer.region.fill_zone`` on the zone of the real Amazon AOI with the
most blocks (footprints from the AOI, one date): plan (``blocks_by_row`` over the AOI, the
ledger check, ``strip_tasks``) -> ``run.run_ray`` on Ray Data with one actor -> ``run.drain``
appending the ledger. Only the pixels are left out, through the job's seams: a reader that
returns a zero view (``NullSar``), a predictor that returns zero views (``NullPredictor``) and
a writer that does nothing (``FillJob.write``). Prints:

* planning time (zone pick + the walk + strips) and the driver's peak RSS over the whole run;
* dispatch overhead per strip: the driver process's CPU time (all its threads: Ray Data's
  executor, the ledger) while the strips run, divided by the strips;
* resume with a full ledger: the ledger padded to ``--ledger-lines`` lines (other dates too),
  then the same plan, which must find nothing left to do.

    .venv/bin/python benchmarks/bench_driver.py                   # zone 20S: ~320k blocks
    .venv/bin/python benchmarks/bench_driver.py --max-rows 100    # quick look: 100 block rows
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sar2opt.infer.ledger import TileLedger  # noqa: E402
from sar2opt.infer.plan import BlockLattice  # noqa: E402
from sar2opt.infer.run import (  # noqa: E402
    ActorPool,
    FillJob,
    block_tasks,
    drain,
    run_ray,
    strip_tasks,
    strips_per_task,
)
from sar2opt.zones import blocks_by_row, count_blocks, split_zones, to_grid_crs  # noqa: E402

TIME = "2024-01-05T09:30:00Z"


class NullSar:
    """A ``run.SarSource`` with no pixels: a read-only zero view of the window's shape."""

    def __init__(self, bands: int = 2) -> None:
        self.bands = bands

    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        return np.broadcast_to(np.float32(0), (self.bands, window[2], window[3]))


class NullPredictor:
    """A predictor with no model: zero views of the output shapes."""

    def __call__(self, batch: dict) -> dict:
        b, _, h, w = batch["sar"].shape
        return {
            "pred": np.broadcast_to(np.float32(0), (b, 1, h, w)),
            "spread": np.broadcast_to(np.float32(0), (b, h, w)),
        }


def null_write(job, strip, preds, spreads, with_prior) -> None:
    """A ``FillJob.write`` that writes nothing."""


def cpu_s() -> float:
    """CPU time (user + system) of this process, all threads."""
    t = os.times()
    return t.user + t.system


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def pick_zone(aoi_path: Path, tile_px: int, overlap_px: int, res_m: float):
    """The zone part of the AOI with the most blocks, its lattice, geometry and count."""
    from sar2opt.aoi import load_aoi

    best = None
    for part in split_zones(load_aoi(aoi_path), res_m):
        lat = BlockLattice(part.grid, tile_px, overlap_px)
        geom = to_grid_crs(part.aoi, part.epsg)
        n = count_blocks(lat, geom)
        if best is None or n > best[3]:
            best = (part, lat, geom, n)
    return best


def plan(lat, geom, ledger: TileLedger, read_blocks: int, max_rows: int | None):
    """What ``fill_zone`` does before the pipeline: blocks minus the ledger, then strips."""

    def rows(t: int):
        for k, row in enumerate(blocks_by_row(lat, geom)):
            if max_rows is not None and k >= max_rows:
                return
            yield row

    blocks = block_tasks([TIME], [0], rows, ledger.done())
    return len(blocks), strip_tasks(blocks, read_blocks)


def pad_ledger(ledger: TileLedger, lines: int) -> int:
    """Append other dates' copies of the ledger's lines until it has ``lines`` lines."""
    text = ledger.path.read_text()
    have = text.count("\n")
    if not have:
        return 0
    out, k = [], 1
    while have < lines:
        chunk = text.replace(TIME, f"2024-{1 + k // 28:02d}-{1 + k % 28:02d}T09:30:00Z")
        take = min(lines - have, chunk.count("\n"))
        out.append("".join(chunk.splitlines(keepends=True)[:take]))
        have += take
        k += 1
    with open(ledger.path, "a") as f:
        f.write("".join(out))
    return have


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aoi", type=Path, default=REPO.parent / "shared/data/aoi/amazon.geojson")
    p.add_argument("--tile-px", type=int, default=256)
    p.add_argument("--overlap-px", type=int, default=64)
    p.add_argument("--read-blocks", type=int, default=8, help="blocks per strip (shard)")
    p.add_argument("--calls-per-actor", type=int, default=3)
    p.add_argument("--strips-per-task", type=int, default=0, help="0: run.strips_per_task's choice")
    p.add_argument("--max-rows", type=int, help="only the first N block rows (quick look)")
    p.add_argument("--ledger-lines", type=int, default=1_000_000)
    args = p.parse_args()

    import ray

    t0, c0 = time.perf_counter(), cpu_s()
    part, lat, geom, n_zone = pick_zone(args.aoi, args.tile_px, args.overlap_px, 10.0)
    t_pick = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    ledger = TileLedger(work)
    t1 = time.perf_counter()
    total, strips = plan(lat, geom, ledger, args.read_blocks, args.max_rows)
    t_plan = time.perf_counter() - t1
    print(
        f"bench_driver: zone {part.name} of {args.aoi.name} ({n_zone:,} blocks/date, "
        f"{lat.n_rows}x{lat.n_cols} lattice), one date: {total:,} blocks in {len(strips):,} "
        f"strips of <= {args.read_blocks}; {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    ray.init(address="local", include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        job = FillJob(str(work), lat, NullSar(), batch_size=4, write=null_write)
        pool = ActorPool(1, 0.5, 0.0, args.calls_per_actor, args.strips_per_task)
        c2, t2 = cpu_s(), time.perf_counter()
        done = drain(run_ray(strips, job, NullPredictor, pool), ledger, total)
        driver_cpu, wall = cpu_s() - c2, time.perf_counter() - t2
    finally:
        ray.shutdown()
    assert done == total
    rss_run = peak_rss_mb()
    lines = pad_ledger(ledger, args.ledger_lines)
    t3 = time.perf_counter()
    left, _ = plan(lat, geom, ledger, args.read_blocks, args.max_rows)
    t_resume = time.perf_counter() - t3
    assert left == 0, f"resume found {left} blocks to do"
    per_strip_ms = 1e3 * driver_cpu / len(strips)
    rss = peak_rss_mb()
    print(f"\n| measure | {part.name}, 1 date | goal |\n|---|---|---|")
    per_task = strips_per_task(len(strips), pool)
    print(f"| blocks / strips / strips per task | {total:,} / {len(strips):,} / {per_task} | – |")
    print(f"| planning (zone pick + walk + strips) | {t_pick:.1f} s + {t_plan:.1f} s | – |")
    print(f"| pipeline wall (no pixels, 1 actor) | {wall:.1f} s | – |")
    print(
        f"| driver CPU per strip | {per_strip_ms:.2f} ms ({driver_cpu:.1f} s) | < 1 ms "
        f"{'met' if per_strip_ms < 1 else 'MISSED'} |"
    )
    print(
        f"| driver peak RSS: plan + pipeline / with the resume | {rss_run:.0f} / {rss:.0f} MB "
        f"| < 1000 MB {'met' if rss < 1000 else 'MISSED'} |"
    )
    print(
        f"| resume, {lines:,}-line ledger | {t_resume:.1f} s | < 10 s "
        f"{'met' if t_resume < 10 else 'MISSED'} |"
    )
    print(f"(total driver CPU {cpu_s() - c0:.1f} s; load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
