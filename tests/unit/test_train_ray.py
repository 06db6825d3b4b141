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


def write_cube(path: Path, n_t: int = 4, size: int = 160, seed: int = 0, aux: bool = False) -> None:
    """SAR in dB; optical reflectance = a fixed mix of smoothed SAR; a cloud at t=1.

    ``aux``: also a DEM (metres) and the prior optical (prior_<band>: the t=0 optical).
    """
    rng = np.random.default_rng(seed)
    z = _smooth(rng.normal(0, 1, (n_t, 2, size, size)), 5) * 4
    sar = np.stack([-12 + 3 * z[:, 0], -19 + 3 * z[:, 1]], 1)
    mix = np.array([[0.02, -0.01], [0.03, 0.0], [0.02, 0.02], [0.08, -0.04]])
    opt = np.clip(np.array([0.05, 0.07, 0.06, 0.25])[None, :, None, None]
                  + np.einsum("oc,tchw->tohw", mix, _smooth(z, 3)), 0.0, 1.0)  # fmt: skip
    clear = np.ones((n_t, 1, size, size))
    clear[1, 0, 20:60, 20:60] = 0.0
    opt[1, :, 20:60, 20:60] = 0.5
    parts, names, attrs = [sar, opt, clear], SAR + OPT + ["clear"], {}
    if aux:
        parts += [np.broadcast_to(opt[:1], opt.shape), 100 + 50 * z[:, :1]]
        names += [f"prior_{b}" for b in OPT] + ["elevation"]
        attrs = {"dem_band": "elevation", "prior_bands": [f"prior_{b}" for b in OPT]}
    cube = np.concatenate(parts, 1).astype(np.float32)
    da = xr.DataArray(
        cube,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array("2024-01-01", dtype="datetime64[ns]")
            + np.arange(n_t) * 12 * 86400 * 10**9,
            "band": names,
        },
    )
    ds = xr.Dataset({"cube": da}, attrs={"sar_bands": SAR, "opt_bands": OPT, **attrs})
    ds.to_zarr(path, mode="w")


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


@pytest.mark.slow
def test_train_model_non_adversarial_sod(ray_local, tmp_path: Path) -> None:
    """SARDINet (no discriminator) on SAR + prior + DEM, one worker: the meta says how."""
    from sar2opt.train.trainer import train_model

    cube = tmp_path / "cube.zarr"
    write_cube(cube, aux=True)
    cfg = load_config(
        None,
        [
            "patches.patch_px=32", "patches.stride_px=32", "model.generator=sardinet",
            "model.discriminator=none", "model.input_set=SOD", "model.dem_fusion=late",
            "model.ngf=8", "model.depth=3", "train.epochs=2", "train.lr=0.002",
            "train.num_workers=1",
        ],
    )  # fmt: skip
    ckpt = train_model(cube, tmp_path / "out", cfg)
    gen, meta = load_generator(ckpt)
    assert meta["input_set"] == "SOD" and meta["model"]["dem_fusion"] == "late"
    assert meta["aux_bands"] == {"prior": [f"prior_{b}" for b in OPT], "dem": ["elevation"]}
    assert len(meta["norm"]["dem_mean"]) == 1
    with torch.no_grad():  # 2 SAR + 4 prior + 1 DEM channels in
        assert gen(torch.zeros(1, 7, 32, 32)).shape == (1, 4, 32, 32)
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["g_l1"]) < float(rows[0]["g_l1"])
    assert float(rows[0]["d_loss"]) == 0.0
