"""Benchmark the synthetic Earth generator: throughput (MB/s of COG pixels) and peak RSS by size.

Each size runs in a fresh subprocess (so peak RSS is its own): a square scene of SIZE km at
``--res-m`` with ``--dates`` Sentinel-1 and ``--dates`` Sentinel-2 acquisitions plus the DEM.

    .venv/bin/python benchmarks/bench_synth.py --sizes-km 10 20 --dates 4
    .venv/bin/python benchmarks/bench_synth.py --sizes-km 100 --dates 4   # ~100 Mpx per band

"MB" counts the uncompressed pixel bytes written (float32 S1 and DEM, uint16 S2 bands and
truth, uint8 masks/SCL/landcover), so MB/s compares across sizes; linear scaling in area shows
as a constant MB/s and a flat peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(size_km: float, dates: int, res_m: float, out: Path) -> dict:
    from sar2opt.catalog.synthetic import SynthSpec, generate_scene, scene_grid

    spec = SynthSpec(res_m=res_m)
    t0 = time.perf_counter()
    items = generate_scene(out, size_km=size_km, res_m=res_m, n_s1=dates, n_s2=dates, spec=spec)
    wall = time.perf_counter() - t0
    grid = scene_grid(size_km, res_m)
    px = grid.width * grid.height
    n_b = len(spec.s2_bands)
    per_px = 4 + 2 * 1  # DEM float32, layover + shadow uint8
    per_px += dates * (2 * 4 + 1)  # S1 vv, vh float32 + landcover
    per_px += dates * (2 * n_b * 2 + 2 + 1 + 1)  # S2 bands + truth uint16, QA60, SCL, landcover
    mb = px * per_px / 1e6
    disk = sum(p.stat().st_size for p in out.rglob("*.tif")) / 1e6
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = ru.ru_maxrss / 1024
    cpu = ru.ru_utime + ru.ru_stime  # unlike wall time, barely moved by other loads
    return {
        "size_km": size_km,
        "pixels": px,
        "items": len(items),
        "wall_s": round(wall, 1),
        "mb": round(mb, 1),
        "mb_per_s": round(mb / wall, 2),
        "mpx_per_s": round(px / 1e6 / wall, 3),
        "cpu_s": round(cpu, 1),
        "mb_per_cpu_s": round(mb / cpu, 2),
        "disk_mb": round(disk, 1),
        "peak_rss_mb": round(rss_mb, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-km", type=float, nargs="+", default=[10.24, 20.48])
    p.add_argument("--dates", type=int, default=4, help="S1 dates and S2 dates (each)")
    p.add_argument("--res-m", type=float, default=10.0)
    p.add_argument("--keep", help="write scenes here instead of a temporary folder")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        out = Path(args.keep)
        print(json.dumps(_one(args.child, args.dates, args.res_m, out)))
        return 0
    rows = []
    for size in args.sizes_km:
        tmp = Path(tempfile.mkdtemp(prefix="bench-synth-", dir=args.keep))
        try:
            cmd = [sys.executable, __file__, "--child", str(size), "--dates", str(args.dates)]
            cmd += ["--res-m", str(args.res_m), "--keep", str(tmp)]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        "| size | pixels/band | dates S1+S2 | wall s | CPU s | MB written | MB/s (wall) "
        "| MB per CPU-s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size_km']:g} km | {r['pixels'] / 1e6:.1f} M | {args.dates}+{args.dates} "
            f"| {r['wall_s']} | {r['cpu_s']} | {r['mb']} | {r['mb_per_s']} "
            f"| {r['mb_per_cpu_s']} | {r['peak_rss_mb']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
