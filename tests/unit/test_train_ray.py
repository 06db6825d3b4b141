"""One real Ray Train run: train_model on a tiny learnable cube with 2 workers, 3 epochs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from sar2opt.config import load_config
from sar2opt.train.checkpoint import load_generator

SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]
# 32 px patches in 96 px split blocks, 16 px apart across splits: train, val and test
# patches on the 192 px test cube (4 blocks: train 2, val 1, test 1).
SMALL_BLOCKS = ("patches.patch_px=32", "patches.block_px=96", "patches.gap_px=16")


def _smooth(a: np.ndarray, k: int) -> np.ndarray:
    """Box blur along the last two axes (k x k, edge-padded), numpy only."""
    pad = k // 2
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    c = a.cumsum(-1).cumsum(-2)
    c = np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) / (k * k)


def write_cube(path: Path, n_t: int = 4, size: int = 192, seed: int = 0, aux: bool = False) -> None:
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
def ray_local(short_tmp):
    import ray

    tmp = tempfile.mkdtemp(prefix="r", dir=short_tmp)  # short: Ray's socket paths are length-capped
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=True
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_train_model_two_workers(ray_local, tmp_path: Path, capsys) -> None:
    from sar2opt.train.trainer import train_model

    cube = tmp_path / "cube.zarr"
    write_cube(cube)
    cfg = load_config(
        None,
        [
            *SMALL_BLOCKS, "patches.stride_px=16",
            "model.ngf=8", "model.ndf=8", "model.depth=3",
            "train.epochs=3", "train.batch_size=8", "train.lr=0.001", "train.num_workers=2",
        ],
    )  # fmt: skip
    ckpt = train_model(cube, tmp_path / "out", cfg)
    assert "train/val cached (" in capsys.readouterr().out  # a small split: in the store

    assert ckpt == tmp_path / "out" / "checkpoint"
    assert (ckpt / "model.pt").is_file() and (ckpt / "config.yaml").is_file()
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows_csv = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows_csv] == [1, 2, 3]
    g_l1 = [float(r["g_l1"]) for r in rows_csv]
    assert g_l1[-1] < g_l1[0], g_l1

    gen, meta = load_generator(ckpt)
    assert meta["in_bands"] == SAR and meta["out_bands"] == OPT
    assert meta["config"]["train"]["num_workers"] == 2
    assert len(meta["norm"]["opt_mean"]) == 4
    with torch.no_grad():
        assert gen(torch.zeros(1, 2, 32, 32)).shape == (1, 4, 32, 32)

    scores = json.loads((tmp_path / "out" / "test_scores.json").read_text())
    assert scores["split"] == "test" and scores["n_patches"] > 0
    assert scores["index_hash"] == meta["index_hash"] and meta["git_sha"]
    rows = scores["rows"]
    assert set(rows) == {"model", "baseline: train mean colour", "baseline: ridge on SAR"}
    assert all(r["mae"] > 0 and r["pixels"] > 0 and -1 <= r["ssim"] <= 1 for r in rows.values())
    # The best checkpoint was copied, and the validation metrics were logged per epoch.
    assert meta["epoch"] == 1 + min(range(3), key=lambda i: float(rows_csv[i]["val_mae_refl"]))
    assert all(float(r["val_psnr_db"]) > 0 and 0 < float(r["val_ssim"]) <= 1 for r in rows_csv)


@pytest.mark.slow
def test_train_model_non_adversarial_sod(ray_local, tmp_path: Path, monkeypatch, capsys) -> None:
    """SARDINet (no discriminator) on SAR + prior + DEM, one worker: the meta says how.
    The splits stream from the store every epoch (no room to cache them), each epoch's
    stream opened in its training pass."""
    import sar2opt.train.trainer as trainer
    from sar2opt.train.trainer import train_model

    monkeypatch.setattr(trainer, "CACHE_STORE_FRACTION", 0.0)
    cube = tmp_path / "cube.zarr"
    write_cube(cube, aux=True)
    cfg = load_config(
        None,
        [
            *SMALL_BLOCKS, "patches.stride_px=32", "model.generator=sardinet",
            "model.discriminator=none", "model.input_set=SOD", "model.dem_fusion=late",
            "model.ngf=8", "model.depth=3", "train.epochs=2", "train.lr=0.002",
            "train.num_workers=1", "train.open_ahead=false",
        ],
    )  # fmt: skip
    ckpt = train_model(cube, tmp_path / "out", cfg)
    assert "train/val streamed)" in capsys.readouterr().out
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


def _descendants(root: int) -> list[int]:
    """PIDs below ``root`` in the process tree (/proc): only our own Ray's processes."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        out += sorted(frontier)
    return out


def _train_workers() -> list[int]:
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"RayTrainWorker" in cmd:
            pids.append(pid)
    return pids


@pytest.mark.slow
def test_worker_killed_mid_epoch_then_early_stop(ray_local, tmp_path: Path) -> None:
    """SIGKILL a Ray Train worker in epoch 2: the run restarts from epoch 1's checkpoint
    (max_failures=1), then stops early on the plateau (lr = 0) at best epoch + patience."""
    from sar2opt.train.trainer import previous_run_meta, train_model

    cube = tmp_path / "cube.zarr"
    write_cube(cube)
    cfg = load_config(
        None,
        [
            *SMALL_BLOCKS, "patches.stride_px=32", "model.ngf=8", "model.ndf=8",
            "model.depth=3", "train.epochs=12", "train.lr=0", "train.patience=2",
            "train.min_delta=0.001", "train.num_workers=2", "train.max_failures=1",
        ],
    )  # fmt: skip
    out, box = tmp_path / "out", {}

    def run() -> None:
        try:
            box["ckpt"] = train_model(cube, out, cfg)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            box["err"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    killed_after, deadline = None, time.time() + 300
    while th.is_alive() and time.time() < deadline:
        try:
            prev = previous_run_meta(str(out / "ray_results"), "train")
        except (ValueError, OSError, RuntimeError):  # snapshot being written
            prev = None
        workers = _train_workers()
        if prev is not None and workers:
            killed_after = prev["epoch"]
            os.kill(workers[-1], signal.SIGKILL)
            break
        time.sleep(0.05)
    th.join(timeout=400)
    assert not th.is_alive() and "err" not in box, box.get("err")
    assert killed_after == 1  # killed during epoch 2, after epoch 1's checkpoint

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(1, len(epochs) + 1))  # epoch 2 redone once, none twice
    best = int(rows[-1]["best_epoch"])
    assert epochs[-1] == best + 2 < 12  # stopped early: patience 2 after the best epoch
    maes = [float(r["val_mae_refl"]) for r in rows]
    assert all(m > maes[best - 1] - 0.001 for m in maes[best:])  # no improvement after
    blob = torch.load(box["ckpt"] / "model.pt", weights_only=True)
    assert blob["meta"]["epoch"] == best  # the best checkpoint, not the last
    scores = json.loads((out / "test_scores.json").read_text())
    assert scores["stopped_early"] and scores["epochs_run"] == epochs[-1]
