"""One real Ray Train run: train_model on a tiny learnable cube with 2 workers, 3 epochs."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from sar2opt.config import load_config
from sar2opt.train.checkpoint import load_generator

SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]


def _smooth(a: np.ndarray, k: int) -> np.ndarray:
    """Box blur along the last two axes (k x k, edge-padded), numpy only."""
    pad = k // 2
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    c = a.cumsum(-1).cumsum(-2)
    c = np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) / (k * k)


def write_cube(path: Path, n_t: int = 4, size: int = 160, seed: int = 0) -> None:
    """SAR in dB; optical reflectance = a fixed mix of smoothed SAR; a cloud at t=1."""
    rng = np.random.default_rng(seed)
    z = _smooth(rng.normal(0, 1, (n_t, 2, size, size)), 5) * 4
    sar = np.stack([-12 + 3 * z[:, 0], -19 + 3 * z[:, 1]], 1)
    mix = np.array([[0.02, -0.01], [0.03, 0.0], [0.02, 0.02], [0.08, -0.04]])
    opt = np.clip(np.array([0.05, 0.07, 0.06, 0.25])[None, :, None, None]
                  + np.einsum("oc,tchw->tohw", mix, _smooth(z, 3)), 0.0, 1.0)  # fmt: skip
    clear = np.ones((n_t, 1, size, size))
    clear[1, 0, 20:60, 20:60] = 0.0
    opt[1, :, 20:60, 20:60] = 0.5
    cube = np.concatenate([sar, opt, clear], 1).astype(np.float32)
    da = xr.DataArray(
        cube,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array("2024-01-01", dtype="datetime64[ns]")
            + np.arange(n_t) * 12 * 86400 * 10**9,
            "band": SAR + OPT + ["clear"],
        },
    )
    xr.Dataset({"cube": da}, attrs={"sar_bands": SAR, "opt_bands": OPT}).to_zarr(path, mode="w")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths are length-capped
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=True)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_train_model_two_workers(ray_local, tmp_path: Path) -> None:
    from sar2opt.train.trainer import train_model

    cube = tmp_path / "cube.zarr"
    write_cube(cube)
    cfg = load_config(
        None,
        [
            "patches.patch_px=32", "patches.stride_px=16", "patches.val_frac=0.2",
            "model.ngf=8", "model.ndf=8", "model.depth=3",
            "train.epochs=3", "train.batch_size=8", "train.lr=0.001", "train.num_workers=2",
        ],
    )  # fmt: skip
    ckpt = train_model(cube, tmp_path / "out", cfg)

    assert ckpt == tmp_path / "out" / "checkpoint"
    assert (ckpt / "model.pt").is_file() and (ckpt / "config.yaml").is_file()
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    g_l1 = [float(r["g_l1"]) for r in rows]
    assert g_l1[-1] < g_l1[0], g_l1

    gen, meta = load_generator(ckpt)
    assert meta["epoch"] == 3 and meta["in_bands"] == SAR and meta["out_bands"] == OPT
    assert meta["config"]["train"]["num_workers"] == 2
    assert len(meta["norm"]["opt_mean"]) == 4
    with torch.no_grad():
        assert gen(torch.zeros(1, 2, 32, 32)).shape == (1, 4, 32, 32)

    scores = json.loads((tmp_path / "out" / "val_scores.json").read_text())
    assert scores["n_val_patches"] > 0
    assert scores["model_mae"] > 0 and scores["baseline_train_mean_mae"] > 0
