"""Benchmark period mosaics: memory stays flat in the number of passes a period folds.

A period's strip folds its passes one after another into one ``BestEvidence`` per block, so
an actor holds a few strips whatever the passes; only the work grows with them. On one
synthetic scene served by a real STAC API, ``jobs/infer_region.py`` (its ``main()``, Ray
already up, the demo model untrained) writes one period holding 1 pass, then one holding 3
(the same AOI, ``infer.period_edges``). Printed: blocks, passes, wall time, peak memory of
the whole job (driver + every Ray process, PSS, ``memwatch``), and the 3-pass run against
the 1-pass run (the floor: the same job with one pass): peak memory (goal: ~1). Wall time is
printed too; on a scene this small it is mostly the job's start-up.

    .venv/bin/python benchmarks/bench_period.py                # 5.12 km scene
    .venv/bin/python benchmarks/bench_period.py --size-km 2.56 # quick look
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_infer import _job, make_checkpoint, run_job, scene  # benchmarks/ is on sys.path

PASSES = {1: ["2023-07-01", "2023-07-02"], 3: ["2023-07-01", "2023-07-26"]}  # S1 07-01/13/25


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=5.12, help="side of the scene")
    p.add_argument("--config", default="jobs/configs/demo.yaml", help="model size, tiling")
    p.add_argument("--work", type=Path, help="keep the scene here (default: a temp dir)")
    args = p.parse_args()

    import ray

    from sar2opt.catalog.server import CatalogServer
    from sar2opt.runtime import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cat, aoi = scene(root, args.size_km, dates=3)
        ckpt = make_checkpoint(root / "ckpt", args.config)
        init_ray()
        job = _job()
        rows = {}
        try:
            with CatalogServer(cat) as server:
                for n, edges in PASSES.items():
                    sets = [f"infer.period_edges=[{edges[0]}, {edges[1]}]"]
                    out = root / f"period-{n}.zarr"
                    rows[n] = run_job(job, aoi, ckpt, server.url, out, args.config, sets)
        finally:
            ray.shutdown()
    print(f"period mosaics, {args.size_km:g} km scene, {args.config}")
    print(f"{'passes':>6} {'blocks':>6} {'wall s':>7} {'peak MB':>8}")
    for n, r in rows.items():
        print(f"{n:>6} {r['tiles']:>6} {r['wall_s']:>7.1f} {r['peak_mb']:>8.0f}")
    ratio = rows[3]["peak_mb"] / rows[1]["peak_mb"]
    print(f"3-pass / 1-pass peak memory: {ratio:.2f} (goal ~1)")


if __name__ == "__main__":
    main()
