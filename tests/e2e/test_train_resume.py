"""Resume: SIGKILL jobs/train.py (and its local Ray) after epoch 2, run the same command
again, and the run continues at epoch 3 with its metric history instead of restarting."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.cubes import SMALL_BLOCKS, write_cube
from tests.helpers.jobs import PY, REPO, kill_all_with_env, run_job

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
EPOCHS = 6


def test_killed_training_job_resumes_where_it_stopped(tmp_path: Path, short_tmp: Path) -> None:
    from sar2opt.train.trainer import previous_run_meta

    cube, out = tmp_path / "cube.zarr", tmp_path / "out"
    write_cube(cube)
    args = ["jobs/train.py", "--cube", cube, "--out", out]
    for s in (
        *SMALL_BLOCKS, "patches.stride_px=32", "model.ngf=8", "model.ndf=8", "model.depth=3",
        f"train.epochs={EPOCHS}", "train.num_workers=1", "train.lr=0.001",
    ):  # fmt: skip
        args += ["--set", s]
    # A fresh local Ray per run, in a short temp dir of its own (socket paths are capped).
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": tempfile.mkdtemp(dir=short_tmp)}

    # Run 1: its own process group, so SIGKILL takes the driver and its Ray, like a lost node.
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(
        [PY, *map(str, args)], cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 1200  # an event with a deadline: a loaded machine is slow
    try:
        while proc.poll() is None and time.time() < deadline:
            try:
                prev = previous_run_meta(str(out / "ray_results"), "train")
            except (ValueError, OSError, RuntimeError):  # snapshot being written
                prev = None
            if prev is not None and prev["epoch"] >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log1.close()
        kill_all_with_env(f"RAY_TMPDIR={env['RAY_TMPDIR']}")
    # Ray's controller registers checkpoints asynchronously: read where the run stands now.
    killed_after = (previous_run_meta(str(out / "ray_results"), "train") or {}).get("epoch")
    assert killed_after is not None and 2 <= killed_after < EPOCHS, (
        killed_after, (tmp_path / "run1.log").read_text()[-3000:]
    )  # fmt: skip
    assert not (out / "checkpoint").exists()  # the job never finished

    # Run 2: the same command.
    r = run_job(args, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"after epoch {killed_after}" in r.stdout
    ran = [int(e) for e in re.findall(rf"epoch (\d+)/{EPOCHS} ", r.stdout + r.stderr)]
    assert ran and min(ran) == killed_after + 1, ran  # nothing before the kill is redone

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))  # no epoch twice
    run_dir = out / "ray_results" / "train"
    with open(run_dir / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2

    # The copied (best) checkpoint: weights_only, with config, norm, git SHA, index hash.
    blob = torch.load(out / "checkpoint" / "model.pt", weights_only=True)
    meta = blob["meta"]
    assert meta["config"]["train"]["epochs"] == EPOCHS and meta["git_sha"]
    assert len(meta["norm"]["opt_mean"]) == 4 and len(meta["index_hash"]) == 64
    assert 1 <= meta["epoch"] <= EPOCHS
    state = torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["epoch"] == meta["epoch"] and len(state["history"]) == meta["epoch"]
