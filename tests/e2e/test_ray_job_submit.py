"""`ray start --head` + `ray job submit -- python jobs/infer_region.py` gives the same mosaic."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.e2e.conftest import REPO, SYN_AOI, SYN_DATES, run_job

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Wait for the dashboard to answer; Ray 2.60 answers 401 without the token: that is up."""
    import requests

    deadline = time.time() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/api/version", timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"ray head did not start: {log.read_text()[-3000:]}")
        time.sleep(1)


@pytest.fixture
def ray_head():
    """A real Ray head (GCS, raylet, dashboard, Jobs API) on 127.0.0.1, stopped afterwards."""
    temp = Path(tempfile.mkdtemp(prefix="s2o-head-", dir="/tmp"))
    gcs, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # token authentication on, with a token of this test's own (never an open Jobs API)
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = temp / "head.log"
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_http(url, proc, log)
        yield {"url": url, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_gives_the_same_mosaic(syn_catalog, syn_trained, ray_head):
    local = syn_catalog["root"] / "mosaic-local.zarr"
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
    ]
    r = run_job(["jobs/infer_region.py", *args, "--out", local])
    assert r.returncode == 0, r.stderr
    submitted = syn_catalog["root"] / "mosaic-job.zarr"
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_head["url"],
        "--",
        sys.executable,
        str(REPO / "jobs" / "infer_region.py"),
        *map(str, args),
        "--out",
        str(submitted),
    ]
    r = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=ray_head["env"]
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "succeeded" in r.stdout + r.stderr
    a, b = xr.open_zarr(local), xr.open_zarr(submitted)
    va, vb = (ds[list(ds.data_vars)[0]] for ds in (a, b))
    assert va.dims == vb.dims and va.shape == vb.shape
    np.testing.assert_allclose(va.values, vb.values, atol=1e-5, equal_nan=True)
