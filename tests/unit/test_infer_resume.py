"""Block-wise store: seams vs a tile-free prediction, ledger resume after a real SIGKILL."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr

from sar2opt.infer.composite import SOURCE_SYNTH
from sar2opt.infer.ledger import TileLedger, parse_ledger, parse_ledger_blocks
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor, predict
from sar2opt.infer.run import (
    ActorPool,
    FillJob,
    Strip,
    StripWorker,
    block_tasks,
    drain,
    run_local,
    strip_tasks,
)
from sar2opt.infer.store import VARS, create_store
from sar2opt.zones import blocks_by_row
from tests.helpers.infer_fakes import GRID, META, NORM, RF, FakeSar, H, W, fake_sar, tiny_net

ROOT = Path(__file__).resolve().parents[2]
TIMES = ["2023-07-03T05:43:12Z", "2023-07-15T05:43:14Z"]
TILE, OVERLAP = 64, 16  # blocks of 48 px, 8 px of context on each side


def fill(store: Path, delay_s: float = 0.0, stop_after: int | None = None) -> int:
    """Create (first time) and fill ``store``; returns how many blocks this call wrote."""
    lat = BlockLattice(GRID, TILE, OVERLAP)
    if not store.exists():
        create_store(store, GRID, TIMES, ["B04"], {"run": "test"}, lat.block_px)
    ledger = TileLedger(store)
    rows = block_tasks(TIMES, [0, 1], lambda t: blocks_by_row(lat, None), ledger.done())
    job = FillJob(str(store), lat, FakeSar(delay_s), batch_size=4)
    predictor = TilePredictor.from_model(tiny_net(), META, flips=2)
    finished = run_local(strip_tasks(rows, 3), job, lambda: predictor)

    def stop(done: int, total: int) -> None:
        if stop_after is not None and done >= stop_after:
            raise KeyboardInterrupt  # the driver dies between two batches

    return drain(finished, ledger, len(rows), stop)


def _values(store: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(store, consolidated=False)
    assert sorted(ds.data_vars) == sorted(VARS)
    return {k: ds[k].values for k in ds.data_vars}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    store = tmp_path_factory.mktemp("ref") / "m.zarr"
    assert fill(store) == 2 * 5 * 7  # 200x300 px in 48 px blocks, two dates
    return _values(store)


def test_blocks_match_tile_free_prediction_along_seams(reference) -> None:
    lat = BlockLattice(GRID, TILE, OVERLAP)
    assert lat.halo_px >= RF  # every written pixel saw its whole receptive field
    for t in range(2):
        flips = [predict(tiny_net(), fake_sar(t)[None], NORM)[0]]
        flips.append(predict(tiny_net(), fake_sar(t)[None, :, :, ::-1], NORM)[0][:, :, ::-1])
        full = np.mean(flips, axis=0)
        diff = np.abs(reference["optical"][t] - full)[:, RF:-RF, RF:-RF]  # grid edge: padding
        seams = np.zeros((H, W), bool)
        seams[:, 48::48] = seams[48::48, :] = True  # block borders
        assert seams[RF:-RF, RF:-RF].sum() > 0
        assert diff[:, seams[RF:-RF, RF:-RF]].max() < 1e-5
        assert diff.max() < 1e-5
        spread = np.abs(flips[0] - flips[1]).mean(axis=0) / 2  # std of two = |a - b| / 2
        inner = (slice(RF, -RF), slice(RF, -RF))
        assert spread[inner].max() > 5e-5  # the flips really disagree
        np.testing.assert_allclose(reference["uncertainty"][t][inner], spread[inner], atol=1e-6)
    assert (reference["source"] == SOURCE_SYNTH).all()


def test_interrupted_run_resumes_only_missing_blocks(tmp_path, reference) -> None:
    store = tmp_path / "m.zarr"
    with pytest.raises(KeyboardInterrupt):
        fill(store, stop_after=30)
    first = TileLedger(store).done()
    assert 30 <= len(first) < 70
    assert fill(store) == 70 - len(first)  # only the missing ones
    assert len(TileLedger(store).done()) == 70 and fill(store) == 0
    for k, v in _values(store).items():
        np.testing.assert_array_equal(v, reference[k])


@pytest.mark.slow
def test_sigkill_half_way_then_resume_is_identical(tmp_path, reference) -> None:
    store = tmp_path / "m.zarr"
    code = (
        "import sys; from pathlib import Path; import tests.unit.test_infer_resume as m; "
        "m.fill(Path(sys.argv[1]), delay_s=0.15)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(store)], cwd=ROOT)
    ledger = TileLedger(store)
    deadline = time.time() + 900  # an event with a deadline: a loaded machine is slow
    while len(ledger.done()) < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(ledger.done())
    assert 20 <= killed_at < 70, killed_at
    assert fill(store) == 70 - killed_at  # only the missing blocks
    for k, v in _values(store).items():
        np.testing.assert_array_equal(v, reference[k])


class _Live:
    """Counts calls in progress per kind and keeps the peak."""

    def __init__(self) -> None:
        self.lock, self.now, self.peak = threading.Lock(), {}, {}

    def wrap(self, kind: str, fn):
        def inner(*a, **kw):
            with self.lock:
                self.now[kind] = self.now.get(kind, 0) + 1
                self.peak[kind] = max(self.peak.get(kind, 0), self.now[kind])
            try:
                return fn(*a, **kw)
            finally:
                with self.lock:
                    self.now[kind] -= 1

        return inner


def test_strip_worker_threads_overlap_reads_never_forwards_and_match_serial(
    tmp_path, reference
) -> None:
    """StripWorker as Ray Data runs it (several calls at once in threads), without Ray."""
    store = tmp_path / "m.zarr"
    lat = BlockLattice(GRID, TILE, OVERLAP)
    create_store(store, GRID, TIMES, ["B04"], {"run": "test"}, lat.block_px)
    rows = block_tasks(TIMES, [0, 1], lambda t: blocks_by_row(lat, None), set())
    live = _Live()

    class CountedNet(torch.nn.Module):
        """tiny_net, counting model calls in progress (each a little slow)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net()
            self.call = live.wrap("forward", lambda x: (time.sleep(0.005), self.net(x))[1])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.call(x)

    class CountingPredictor(TilePredictor):
        def __init__(self) -> None:
            self.device = torch.device("cpu")
            self._setup(CountedNet(), META, flips=2)
            self.call = live.wrap("predict", lambda batch: (time.sleep(0.005), batch)[1])

        def __call__(self, batch: dict) -> dict:
            return super().__call__(self.call(batch))

    reader = FakeSar(0.03)
    sar = SimpleNamespace(read=live.wrap("read", reader.read))  # a SarSource, counted
    worker = StripWorker(FillJob(str(store), lat, sar, batch_size=4), CountingPredictor)

    def call(s: Strip) -> dict:  # one strip per call, in Ray Data's numpy batch format
        return worker(
            {
                "t": np.array([s.t]),
                "time": np.array([s.time], dtype=object),
                "bi": np.array([s.bi]),
                "bjs": np.array([np.array(s.bjs), None], dtype=object)[:1],
            }
        )

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(call, strip_tasks(rows, 3)))
    got = [
        (str(t), int(i), int(j))
        for o in outs
        for t, i, j in zip(o["time"], o["bi"], o["bj"], strict=True)
    ]
    assert sorted(got) == sorted(r.key for r in rows)  # once each
    assert live.peak["forward"] == 1  # one model call at a time: the predictor's lock
    assert live.peak["predict"] >= 2  # ... while another batch's flips and statistics run
    assert live.peak["read"] >= 2  # while other strips are read (all three start reading)
    for k, v in _values(store).items():
        np.testing.assert_array_equal(v, reference[k])


def test_ledger_ignores_torn_line_and_appends_after_it(tmp_path) -> None:
    assert parse_ledger("2023-07-03T05:43:12Z 1 2\n2023-07-03T05:43:12Z 3") == {
        ("2023-07-03T05:43:12Z", 1, 2)
    }
    (tmp_path / "_sar2opt_ledger.txt").write_text("a 1 2\nb 3")  # killed mid-line
    led = TileLedger(tmp_path)
    assert led.record([("c", 4, 5)]) == 1
    assert led.done() == {("a", 1, 2), ("c", 4, 5)}


class DyingPredictor(TilePredictor):
    """Kills its own worker process on the first batch after ``flag`` appears (once)."""

    def __init__(self, flag: str) -> None:
        self.device = torch.device("cpu")
        self._setup(tiny_net(), META, flips=2)
        self.flag = Path(flag)

    def __call__(self, batch: dict) -> dict:
        if self.flag.exists():
            self.flag.unlink()
            os._exit(1)  # the actor's process dies mid-run, as on a lost node
        return super().__call__(batch)


@pytest.mark.slow
def test_worker_process_dying_mid_run_does_not_fail_the_job(tmp_path, reference, ray_local) -> None:
    from sar2opt.infer.run import run_ray

    store = tmp_path / "m.zarr"
    lat = BlockLattice(GRID, TILE, OVERLAP)
    create_store(store, GRID, TIMES, ["B04"], {"run": "test"}, lat.block_px)
    flag = tmp_path / "die"
    flag.touch()
    rows = block_tasks(TIMES, [0, 1], lambda t: blocks_by_row(lat, None), set())
    job = FillJob(str(store), lat, FakeSar(), batch_size=4)
    make = functools.partial(DyingPredictor, str(flag))
    finished = run_ray(strip_tasks(rows, 3), job, make, ActorPool(cpus_per_actor=0.5))
    assert drain(finished, TileLedger(store), len(rows)) == 70
    assert not flag.exists()  # the actor really died once
    for k, v in _values(store).items():
        np.testing.assert_array_equal(v, reference[k])


def test_ledger_blocks_parse_as_the_line_parser_does() -> None:
    text = (
        "2023-07-03T05:43:12Z 1 2\n2023-07-03T05:43:12Z 3\n"  # a torn line a later run ended
        "2023-07-15T05:43:14Z 0 10\n 2023-07-15T05:43:14Z 4 5\n"  # odd spacing: slow path
        "2023-07-03T05:43:12Z 1 2\nb 3 x\n2023-07-03T05:43:12Z 12 345\n"
        "2023-07-15T05:43:14Z 7"  # torn by a kill: no newline
    )
    done = parse_ledger_blocks(text)
    assert done == parse_ledger(text) and len(done) == 4
    assert ("2023-07-15T05:43:14Z", 4, 5) in done and ("2023-07-15T05:43:14Z", 7, 0) not in done
    assert done.missing("2023-07-03T05:43:12Z", 1, np.arange(5)).tolist() == [0, 1, 3, 4]
    assert done.missing("2023-01-01T00:00:00Z", 1, np.arange(3)).tolist() == [0, 1, 2]


def test_resume_skips_exactly_the_blocks_in_a_large_ledger(tmp_path) -> None:
    """A ledger of many lines and times (as a continent's): the walk keeps every other block."""
    rng = np.random.default_rng(0)
    cols = np.arange(300)
    done = {(TIMES[t], bi, int(bj)) for t in (0, 1) for bi in range(40) for bj in cols[::2]}
    done |= {(f"2022-01-{d:02d}T00:00:00Z", 1, 1) for d in range(1, 29)}  # other dates
    lines = [f"{t} {bi} {bj}\n" for t, bi, bj in done]
    rng.shuffle(lines)
    (tmp_path / "_sar2opt_ledger.txt").write_text("".join(lines))
    ledger = TileLedger(tmp_path)
    assert ledger.done() == done
    left = block_tasks(TIMES, [0, 1], lambda t: ((bi, cols) for bi in range(40)), ledger.done())
    assert {b.key for b in left} == {
        (TIMES[t], bi, int(bj)) for t in (0, 1) for bi in range(40) for bj in cols[1::2]
    }


def test_a_shard_with_one_block_to_do_is_done_again_whole() -> None:
    """Its writer replaces the shard (store.clear_objects): the ledger's blocks of that shard
    must be in the task too, or a resume would lose them."""
    cols = np.arange(7)
    rows = lambda t: [(0, cols), (1, cols)]  # noqa: E731
    done = {(TIMES[0], 0, j) for j in range(7)} | {(TIMES[0], 1, j) for j in (0, 1, 2, 4, 6)}
    todo = block_tasks(TIMES, [0], rows, done, shard_blocks=3)
    # row 1 misses 3 and 5: shard 1 (cols 3-5) again whole; shards 0 and 2 stay done
    assert [(b.bi, b.bj) for b in todo] == [(1, 3), (1, 4), (1, 5)]
    assert [(b.bi, b.bj) for b in block_tasks(TIMES, [0], rows, done)] == [(1, 3), (1, 5)]
    assert [s.bjs for s in strip_tasks(todo, 3)] == [(3, 4, 5)]  # one writer for the shard
