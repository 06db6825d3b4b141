"""A real two-node Ray cluster on this machine: `ray job submit` infer_region, lose the worker
node mid-job, and the mosaic is still complete and equal to a clean run."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.e2e.conftest import REPO, SYN_AOI, SYN_DATES, run_job
from tests.e2e.test_ray_job_submit import RAY, _free_port, _wait_http

pytestmark = pytest.mark.slow


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [RAY, "start", "--block", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_worker_node_lost_mid_job(syn_catalog, syn_trained):
    temp = Path(tempfile.mkdtemp(prefix="s2o-mn-", dir="/tmp"))
    gcs, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = _start(
        [
            "--head",
            "--num-cpus=2",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ],
        env,
        temp / "head.log",
    )
    worker = None
    try:
        url = f"http://127.0.0.1:{dash}"
        _wait_http(url, head, temp / "head.log")
        worker = _start(
            [f"--address=127.0.0.1:{gcs}", "--num-cpus=2", "--node-ip-address=127.0.0.1"],
            env,
            temp / "worker.log",
        )
        time.sleep(8)  # let the second node register
        args = [
            "--aoi",
            SYN_AOI,
            "--start",
            SYN_DATES[0],
            "--end",
            SYN_DATES[1],
            "--checkpoint",
            syn_trained["ckpt"],
            "--config",
            "jobs/configs/demo.yaml",
            "--stac-url",
            syn_catalog["url"],
            "--set",
            "infer.batch_size=1",
        ]
        clean = syn_catalog["root"] / "mosaic-clean.zarr"
        if not clean.exists():
            r = run_job(["jobs/infer_region.py", *args, "--out", clean])
            assert r.returncode == 0, r.stderr[-3000:]
        out = temp / "mosaic-mn.zarr"
        cmd = [
            RAY,
            "job",
            "submit",
            "--address",
            url,
            "--",
            sys.executable,
            str(REPO / "jobs" / "infer_region.py"),
            *map(str, args),
            "--out",
            str(out),
        ]
        job = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # lose the worker node once tiles are flowing
        killed_mid_job = False
        lines = []
        for line in job.stdout:
            lines.append(line)
            if re.search(r"infer: .*tiles \d+/\d+", line):
                killed_mid_job = job.poll() is None
                _kill(worker, signal.SIGKILL)
                break
        rest, _ = job.communicate(timeout=900)
        log = "".join(lines) + rest
        assert killed_mid_job, "the job ended before the worker node could be killed:\n" + log
        assert job.returncode == 0, log[-4000:]
        assert "succeeded" in log
        a, b = xr.open_zarr(clean), xr.open_zarr(out)
        va, vb = (ds[list(ds.data_vars)[0]] for ds in (a, b))
        assert np.isfinite(vb.values).mean() > 0.99
        np.testing.assert_allclose(va.values, vb.values, atol=1e-5, equal_nan=True)
    finally:
        if worker is not None:
            _kill(worker, signal.SIGKILL)
        _kill(head)
        shutil.rmtree(temp, ignore_errors=True)
