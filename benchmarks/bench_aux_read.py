"""What the inputs besides SAR cost to read, per input set, counted rather than timed.

``bench_infer.py --inputs`` gives the job's CPU per tile, but on a shared 2-CPU VM its
steady state swings by tens of percent between runs. This runs the same job (``jobs/
infer_region.py``'s ``main()`` on the same scene: 3 S1 and 6 S2 dates, the S1 date before
the first S2 skipped) in one process (``--executor local``), its strips in ``--threads``
threads as a ``StripWorker`` runs them (one decoded-tile cache shared by the strips in
work), and prints per input set what does not depend on the machine's load:

* S2 dates read (``cube.build.read_optical`` calls, one per item and strip window);
* COG tiles decoded (misses of ``infer.read``'s decoded-tile cache);
* the CPU of ``CatalogAux.read`` per tile (the prior / same-date S2 / DEM read, thread CPU
  time of the reading thread), and the whole job's CPU per tile (process CPU).

    .venv/bin/python benchmarks/bench_aux_read.py                       # 20.48 km, S,SO,SC
    .venv/bin/python benchmarks/bench_aux_read.py --size-km 5.12 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_infer  # benchmarks/ is on sys.path when a script there runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=20.48, help="side of the scene")
    p.add_argument("--inputs", default="S,SO,SC")
    p.add_argument("--threads", type=int, default=3, help="strips in work at once")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--config", default="jobs/configs/demo.yaml")
    p.add_argument("--work", type=Path, help="keep the scene and checkpoints here")
    args = p.parse_args()

    import torch

    from sar2opt.catalog.server import CatalogServer
    from sar2opt.cube import build
    from sar2opt.infer import read, region, run

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_aux_"))
    work.mkdir(parents=True, exist_ok=True)
    counts = {"dates": 0, "decodes": 0, "aux_s": 0.0, "tiles": 0}
    lock = threading.Lock()

    def add(key: str, v: float) -> None:
        with lock:
            counts[key] += v

    real_read_optical, real_tile = build.read_optical, read._cached_tile
    real_aux, real_strip = read.CatalogAux.read, run.process_strip

    def read_optical(items, *a, **k):
        add("dates", len(items))
        return real_read_optical(items, *a, **k)

    def cached_tile(ds, href, ti, tj, *a):
        if (href, ti, tj) not in read._blocks:  # the caller holds read._lock
            counts["decodes"] += 1
        return real_tile(ds, href, ti, tj, *a)

    def aux_read(self, *a, **k):
        c0 = time.thread_time()
        out = real_aux(self, *a, **k)
        add("aux_s", time.thread_time() - c0)
        return out

    def threaded(strips, job, make_predictor):
        predict = make_predictor()
        with ThreadPoolExecutor(args.threads) as ex:
            yield from ex.map(lambda s: real_strip(s, job, predict), strips)

    build.read_optical, read._cached_tile = read_optical, cached_tile
    read.CatalogAux.read = aux_read
    region.run_local = threaded  # fill_zone's executor="local" path

    cat, aoi = bench_infer.scene(work, args.size_km, 3, 6)
    job = bench_infer._job()
    rows: dict[str, list[tuple[float, ...]]] = {}
    with CatalogServer(cat) as server:
        for _ in range(args.repeat):
            for iset in args.inputs.split(","):
                ckpt = work / f"ckpt-{iset}"
                if not (ckpt / "model.pt").exists():
                    sets = [f"model.input_set={iset}", "cube.prior_days=30"]
                    bench_infer.make_checkpoint(ckpt, args.config, sets)
                out = work / f"out-{iset}.zarr"
                for old in (out, out.with_name(out.name + ".partial")):
                    shutil.rmtree(old, ignore_errors=True)
                read.close_all()
                counts.update(dates=0, decodes=0, aux_s=0.0)
                argv = [
                    *("--aoi", str(aoi), "--checkpoint", str(ckpt), "--out", str(out)),
                    *("--start", "2023-07-02", "--end", "2023-12-31", "--config", args.config),
                    *("--stac-url", server.url, "--executor", "local"),
                ]
                c0 = time.process_time()
                with contextlib.redirect_stdout(io.StringIO()):
                    code = job.main(job.parse_args(argv))
                cpu = time.process_time() - c0
                if code != 0:
                    raise SystemExit(f"infer_region failed for {iset}")
                tiles = len(read_done(out))
                rows.setdefault(iset, []).append(
                    (counts["dates"], counts["decodes"], 1e3 * counts["aux_s"] / tiles,
                     1e3 * cpu / tiles, tiles)
                )  # fmt: skip
    print(
        f"aux reads, {args.size_km:g} km scene, {args.threads} strips at once, medians of "
        f"{args.repeat}:\n| input set | tiles | S2 dates read | COG tiles decoded | aux read "
        "core-ms/tile | job core-ms/tile |\n|---|---|---|---|---|---|"
    )
    for iset, rs in rows.items():
        med = [statistics.median(r[k] for r in rs) for k in range(5)]
        print(
            f"| {iset} | {med[4]:.0f} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.1f} | {med[3]:.1f} |"
        )


def read_done(out: Path) -> set:
    from sar2opt.infer.ledger import TileLedger

    return TileLedger(out).done()


if __name__ == "__main__":
    main()
