"""jobs/infer_region.py: the Ray Data pipeline (local Ray, fake reader/model) and error paths."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sar2opt.config import InferSpec
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec
from sar2opt.infer.predictor import TilePredictor, predict
from sar2opt.infer.tiles import plan_tiles

ROOT = Path(__file__).resolve().parents[2]


def _load_job():
    spec = importlib.util.spec_from_file_location("infer_region", ROOT / "jobs" / "infer_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


job = _load_job()

NORM = {"sar_mean": [-12.0, -19.0], "sar_std": [3.0, 4.0], "opt_mean": [0.05], "opt_std": [0.02]}
META = {"in_bands": ["vv", "vh"], "out_bands": ["B04"], "norm": NORM, "model": {}}
H, W = 200, 300
GRID = GridSpec(32633, 10.0, (500_000.0, 4_000_000.0, 500_000.0 + 10 * W, 4_000_000.0 + 10 * H))


def _sar(t: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack(
        [-12 + 3 * np.sin(xx / 9 + t) * np.cos(yy / 13), -19 + 3 * np.cos(xx / 11 - t)]
    ).astype(np.float32)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)
    ).eval()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths are length-limited
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_pipeline_blends_tiles_into_the_tile_free_prediction(ray_local) -> None:
    # Reader and predictor are defined here so Ray ships them by value to its workers.
    def fake_read(row: dict) -> dict:
        out = dict(row)
        r, c, h, w = (int(row[k]) for k in ("row", "col", "height", "width"))
        out["sar"] = _sar(int(row["t"]))[:, r : r + h, c : c + w]
        return out

    class FakePredictor(TilePredictor):
        def __init__(self, device: str = "cpu") -> None:
            self.device = torch.device(device)
            self._setup(_net(), META)

    spec = InferSpec(tile_px=128, overlap_px=32, batch_size=4, num_actors=1, cpus_per_actor=0.5)
    tiles = plan_tiles(GRID, spec.tile_px, spec.overlap_px)
    times = ["2023-07-03T05:43:12Z", "2023-07-15T05:43:14Z"]
    tasks = [tile.task(t, iso) for t, iso in enumerate(times) for tile in tiles]
    seen = []
    batches = job.predict_tiles(
        tasks, spec, read_fn=fake_read, read_kwargs={},
        predictor_cls=FakePredictor, predictor_kwargs={"device": "cpu"},
    )  # fmt: skip
    data = job.blend_batches(
        batches, (2, 1, H, W), spec.overlap_px, len(tasks), lambda d, n: seen.append((d, n))
    )
    assert seen[-1] == (len(tasks), len(tasks))
    assert data.shape == (2, 1, H, W) and np.isfinite(data).all()
    for t in range(2):
        full = predict(_net(), _sar(t)[None], NORM)[0]
        diff = np.abs(data[t] - full)[:, 2:-2, 2:-2]  # grid border: different padding
        assert diff.max() < 2e-3  # seams (RF radius 2 px, ramp tail weight < 0.05)
        assert np.median(diff) < 1e-6
    assert not np.allclose(data[0], data[1])  # each row went to its own time slot


def test_worker_catalog_error_is_unwrapped(ray_local) -> None:
    def failing_read(row: dict) -> dict:
        raise CatalogError("asset https://example/x.tif is unreachable")

    spec = InferSpec(tile_px=64, overlap_px=16)
    tasks = [t.task(0, "2023-07-03T05:43:12Z") for t in plan_tiles(GRID, 64, 16)[:2]]
    with pytest.raises(Exception) as info:  # noqa: B017 - Ray decides the wrapper type
        list(
            job.predict_tiles(
                tasks,
                spec,
                read_fn=failing_read,
                read_kwargs={},
                predictor_cls=TilePredictor,
                predictor_kwargs={"checkpoint_dir": "/nonexistent"},
            )  # fmt: skip
        )
    err = job._user_error(info.value)
    assert isinstance(err, CatalogError)
    assert job._one_line(err) == "asset https://example/x.tif is unreachable"


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
