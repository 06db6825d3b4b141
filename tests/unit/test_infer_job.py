"""The Ray Data pipeline of ``sar2opt.infer.run`` (local Ray, fake reader/model) and the error
paths of jobs/infer_region.py (``sar2opt.jobkit.entry``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from sar2opt.errors import CatalogError, first_line
from sar2opt.infer.ledger import TileLedger
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor, predict
from sar2opt.infer.run import ActorPool, FillJob, Strip, block_tasks, drain, run_ray, strip_tasks
from sar2opt.infer.store import create_store
from sar2opt.jobkit import user_error
from sar2opt.zones import blocks_by_row
from tests.helpers.infer_fakes import (
    GRID,
    META,
    NORM,
    FailingSar,
    FakeSar,
    H,
    W,
    fake_sar,
    tiny_net,
)

ROOT = Path(__file__).resolve().parents[2]


def _load_job():
    spec = importlib.util.spec_from_file_location("infer_region", ROOT / "jobs" / "infer_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


job = _load_job()


class FakePredictor(TilePredictor):
    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self._setup(tiny_net(), META)


def test_ray_pipeline_writes_every_block_of_the_tile_free_prediction(ray_local, tmp_path) -> None:
    times = ["2023-07-03T05:43:12Z", "2023-07-15T05:43:14Z"]
    lat = BlockLattice(GRID, 128, 32)  # 96 px blocks, 16 px of context: RF 2 px -> exact
    store = tmp_path / "m.zarr"
    create_store(store, GRID, times, ["B04"], {}, lat.block_px)
    blocks = block_tasks(times, [0, 1], lambda t: blocks_by_row(lat, None), set())
    seen = []
    ledger = TileLedger(store)
    job = FillJob(str(store), lat, FakeSar(), batch_size=4)
    finished = run_ray(strip_tasks(blocks, 2), job, FakePredictor, ActorPool(cpus_per_actor=0.5))
    assert drain(finished, ledger, len(blocks), lambda d, n: seen.append((d, n))) == len(blocks)
    assert seen[-1] == (len(blocks), len(blocks)) == (24, 24)  # 3 x 4 blocks, 2 dates
    assert ledger.done() == {b.key for b in blocks}
    data = xr.open_zarr(store)["optical"].values
    assert data.shape == (2, 1, H, W) and np.isfinite(data).all()
    for t in range(2):
        full = predict(tiny_net(), fake_sar(t)[None], NORM)[0]
        diff = np.abs(data[t] - full)[:, 2:-2, 2:-2]  # grid border: different padding
        assert diff.max() < 1e-5  # every block saw its whole receptive field
    assert not np.allclose(data[0], data[1])  # each row went to its own time slot


def test_worker_catalog_error_is_unwrapped(ray_local, tmp_path) -> None:
    strip = Strip(0, "2023-07-03T05:43:12Z", 0, (0, 1))
    job = FillJob(str(tmp_path / "m.zarr"), BlockLattice(GRID, 128, 32), FailingSar())
    with pytest.raises(Exception) as info:  # noqa: B017 - Ray decides the wrapper type
        list(run_ray([strip], job, FakePredictor, ActorPool(cpus_per_actor=0.5)))
    err = user_error(info.value)
    assert isinstance(err, CatalogError)
    assert first_line(err) == "asset https://example/x.tif is unreachable"


def _args(tmp_path: Path, **kw) -> list[str]:
    a = {
        "--aoi": str(tmp_path / "aoi.geojson"),
        "--checkpoint": str(tmp_path / "ckpt"),
        "--out": str(tmp_path / "m.zarr"),
        "--start": "2023-07-01",
        "--end": "2023-07-31",
    }
    a.update(kw)
    return [x for kv in a.items() for x in kv]


def test_missing_aoi_is_one_line_error(tmp_path, capsys) -> None:
    rc = job.main(job.parse_args(_args(tmp_path)))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: AOI file not found") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_before_any_work(tmp_path, capsys) -> None:
    (tmp_path / "m.zarr").mkdir()
    rc = job.main(job.parse_args(_args(tmp_path)))
    assert rc == 2 and "exists; pass --overwrite" in capsys.readouterr().err


def test_bad_tile_size_is_config_error(tmp_path, capsys) -> None:
    aoi = {"type": "Polygon", "coordinates": [[[15, 36], [15.01, 36], [15.01, 36.01], [15, 36]]]}
    (tmp_path / "aoi.geojson").write_text(json.dumps(aoi))
    rc = job.main(job.parse_args(_args(tmp_path) + ["--set", "infer.tile_px=100"]))
    assert rc == 2 and "infer.tile_px must be a positive multiple of 32" in capsys.readouterr().err


def test_bad_checkpoint_is_one_line_error(tmp_path, capsys) -> None:
    aoi = {"type": "Polygon", "coordinates": [[[15, 36], [15.01, 36], [15.01, 36.01], [15, 36]]]}
    (tmp_path / "aoi.geojson").write_text(json.dumps(aoi))
    rc = job.main(job.parse_args(_args(tmp_path)))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "checkpoint" in err
    assert not (tmp_path / "m.zarr").exists()


def test_tasks_of_several_strips_write_the_same_store(ray_local, tmp_path) -> None:
    """``strips_per_task`` > 1 (a continent's runs): every block once, the same pixels."""
    times = ["2023-07-03T05:43:12Z", "2023-07-15T05:43:14Z"]
    lat = BlockLattice(GRID, 128, 32)
    blocks = block_tasks(times, [0, 1], lambda t: blocks_by_row(lat, None), set())
    strips = strip_tasks(blocks, 2)
    stores = []
    for per_task in (1, 3):
        store = tmp_path / f"m{per_task}.zarr"
        create_store(store, GRID, times, ["B04"], {}, lat.block_px)
        job = FillJob(str(store), lat, FakeSar(), batch_size=4)
        pool = ActorPool(cpus_per_actor=0.5, strips_per_task=per_task)
        got = [k for keys in run_ray(strips, job, FakePredictor, pool) for k in keys]
        assert sorted(got) == sorted(b.key for b in blocks)  # once each
        stores.append(xr.open_zarr(store)["optical"].values)
    np.testing.assert_array_equal(stores[0], stores[1])


def test_strips_per_task_grows_with_the_run_and_keeps_every_thread_busy() -> None:
    from sar2opt.infer.run import MAX_STRIPS_PER_TASK, strips_per_task

    pool = ActorPool(num_actors=2, calls_per_actor=3)
    assert strips_per_task(10, pool) == 1  # a small run: one strip per task, as before
    assert strips_per_task(41_040, pool) == MAX_STRIPS_PER_TASK
    n = 2 * 3 * 8 * 5  # 8 tasks per thread at 5 strips each
    assert strips_per_task(n, pool) == 5
    assert strips_per_task(10, ActorPool(strips_per_task=4)) == 4


def test_write_seam_gets_every_strip_instead_of_the_store(tmp_path) -> None:
    from sar2opt.infer.run import run_local

    lat = BlockLattice(GRID, 128, 32)
    blocks = block_tasks(["2023-07-03T05:43:12Z"], [0], lambda t: blocks_by_row(lat, None), set())
    seen = []
    job = FillJob(
        str(tmp_path / "none.zarr"), lat, FakeSar(), batch_size=4,
        write=lambda job, strip, preds, spreads, with_prior: seen.append(
            (strip, len(preds), len(spreads), with_prior)
        ),
    )  # fmt: skip
    strips = strip_tasks(blocks, 3)
    done = [k for keys in run_local(strips, job, FakePredictor) for k in keys]
    assert sorted(done) == sorted(b.key for b in blocks)
    assert [s for s, *_ in seen] == strips
    assert all(n == m == len(s.bjs) for s, n, m, _ in seen)
    assert all(w == [None] * len(s.bjs) for s, _, _, w in seen)  # an S model reads no prior
    assert not (tmp_path / "none.zarr").exists()  # nothing written
