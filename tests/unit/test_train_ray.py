"""One real Ray Train run: train_model on a tiny learnable cube with 2 workers, 3 epochs."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from sar2opt.config import load_config
from sar2opt.train.checkpoint import load_generator
from tests.helpers.cubes import AUX_CUBE_SPEC, OPT, SAR, SMALL_BLOCKS, write_cube


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
    assert meta["cube_spec"] == AUX_CUBE_SPEC  # inference makes the prior by its cube's rule
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


def _failure_decisions(ray) -> list[str]:
    """Ray Train's own record of worker-group failures: the "[FailurePolicy] RETRY|RAISE"
    entries of its controllers' logs in this Ray session (one per failure handled)."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "train"
    out = []
    for path in sorted(logs.glob("ray-train-sys-controller-*.log")):
        for line in path.read_text().splitlines():
            msg = json.loads(line).get("message", "") if line.startswith("{") else line
            if msg.startswith("[FailurePolicy]"):
                out.append(msg)
    return out


@pytest.mark.slow
@pytest.mark.heavy
def test_worker_killed_mid_epoch_then_early_stop(ray_local, tmp_path: Path) -> None:
    """SIGKILL a Ray Train worker once epoch 1's checkpoint is in (mid-run): Ray Train records
    the failure and restarts the worker group from the last checkpoint (max_failures=1), then
    the run stops early on the plateau (lr = 0) at best epoch + patience."""
    from sar2opt.train.trainer import previous_run_meta, train_model

    cube = tmp_path / "cube.zarr"
    write_cube(cube)
    cfg = load_config(
        None,
        [
            *SMALL_BLOCKS, "patches.stride_px=32", "model.ngf=8", "model.ndf=8",
            "model.depth=3", "train.epochs=12", "train.lr=0", "train.patience=3",
            "train.min_delta=0.001", "train.num_workers=2", "train.max_failures=1",
        ],
    )  # fmt: skip
    out, box = tmp_path / "out", {}

    def run() -> None:
        try:
            box["ckpt"] = train_model(cube, out, cfg)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            box["err"] = e

    seen = len(_failure_decisions(ray_local))  # earlier tests' runs in this Ray session
    th = threading.Thread(target=run, daemon=True)
    th.start()
    # wait on the event (a checkpoint registered, workers up), however slow the machine is
    killed_after, deadline = None, time.time() + 1200
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
    th.join(timeout=1200)
    assert not th.is_alive() and "err" not in box, box.get("err")
    assert killed_after is not None and killed_after >= 1  # after a checkpoint
    # the restart happened: one worker-group failure, retried (not raised, not ignored)
    decisions = _failure_decisions(ray_local)[seen:]
    assert len(decisions) == 1 and decisions[0].startswith("[FailurePolicy] RETRY"), decisions
    assert "worker group" in decisions[0] and "Error count: 1" in decisions[0], decisions[0]

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(1, len(epochs) + 1))  # epoch 2 redone once, none twice
    best = int(rows[-1]["best_epoch"])
    assert killed_after < epochs[-1]  # killed mid-run: epochs were left to redo
    assert epochs[-1] == best + 3 < 12  # stopped early: patience 3 after the best epoch
    maes = [float(r["val_mae_refl"]) for r in rows]
    assert all(m > maes[best - 1] - 0.001 for m in maes[best:])  # no improvement after
    blob = torch.load(box["ckpt"] / "model.pt", weights_only=True)
    assert blob["meta"]["epoch"] == best  # the best checkpoint, not the last
    scores = json.loads((out / "test_scores.json").read_text())
    assert scores["stopped_early"] and scores["epochs_run"] == epochs[-1]
