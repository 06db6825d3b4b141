"""The inference start-up: each actor stamps its start (benchmarks/bench_infer.py's breakdown)."""

from __future__ import annotations

import json
import time

import numpy as np

from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor
from sar2opt.infer.run import (
    STARTUP_LOG_ENV,
    FillJob,
    StripWorker,
    block_tasks,
    process_start_s,
    strip_tasks,
)
from sar2opt.infer.store import create_store
from sar2opt.zones import blocks_by_row
from tests.helpers.infer_fakes import GRID, META, FakeSar, tiny_net

TIMES = ["2023-07-03T05:43:12Z"]


def test_process_start_is_before_now_and_after_boot() -> None:
    start = process_start_s()
    assert time.time() - 24 * 3600 * 365 < start <= time.time()
    assert process_start_s(999_999_999) == 0.0  # no such process


def test_strip_worker_logs_its_startup_stamps_once(tmp_path, monkeypatch) -> None:
    log = tmp_path / "startup.jsonl"
    monkeypatch.setenv(STARTUP_LOG_ENV, str(log))
    store = tmp_path / "m.zarr"
    lat = BlockLattice(GRID, 64, 16)
    create_store(store, GRID, TIMES, ["B04"], {"run": "test"}, lat.block_px)
    rows = block_tasks(TIMES, [0], lambda t: blocks_by_row(lat, None), set())
    before = time.time()
    worker = StripWorker(
        FillJob(str(store), lat, FakeSar(), batch_size=4),
        lambda: TilePredictor.from_model(tiny_net(), META),
    )
    for s in strip_tasks(rows, 3)[:2]:  # two calls: one line
        worker(
            {
                "t": np.array([s.t]),
                "time": np.array([s.time], dtype=object),
                "bi": np.array([s.bi]),
                "bjs": np.array([np.array(s.bjs), None], dtype=object)[:1],
            }
        )
    (line,) = log.read_text().splitlines()
    d = json.loads(line)
    assert d["process"] <= d["module"] <= d["init"] and d["torch"] <= d["init"]
    assert before <= d["init"] <= d["predictor"] <= d["call"] <= d["called"] <= time.time()
