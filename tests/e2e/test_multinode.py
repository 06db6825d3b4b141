"""A real two-node Ray cluster on this machine: `ray job submit` infer_region, lose the worker
node mid-job, and the mosaic is still complete and equal to a clean run."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.e2e.conftest import REPO, run_job, syn_args
from tests.e2e.ray_cluster import start_head, start_node, stop_node, submit_cmd, token_env

pytestmark = pytest.mark.slow


def test_worker_node_lost_mid_job(syn_catalog, syn_trained):
    temp = Path(tempfile.mkdtemp(prefix="s2o-mn-", dir="/tmp"))
    env = token_env()
    head = worker = None
    try:
        head, url, gcs = start_head(temp, env)
        worker = start_node(
            [f"--address=127.0.0.1:{gcs}", "--num-cpus=2", "--node-ip-address=127.0.0.1"],
            env,
            temp / "worker.log",
        )
        time.sleep(8)  # let the second node register
        args = [
            *syn_args(syn_catalog["url"]),
            "--checkpoint",
            syn_trained["ckpt"],
            "--set",
            "infer.batch_size=1",
        ]
        clean = syn_catalog["root"] / "mosaic-clean.zarr"
        if not clean.exists():
            r = run_job(["jobs/infer_region.py", *args, "--out", clean])
            assert r.returncode == 0, r.stderr[-3000:]
        out = temp / "mosaic-mn.zarr"
        job = subprocess.Popen(
            submit_cmd(url, "jobs/infer_region.py", [*args, "--out", out]),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # lose the worker node once tiles are flowing
        killed_mid_job = False
        lines = []
        for line in job.stdout:
            lines.append(line)
            if re.search(r"infer: .*tiles \d+/\d+", line):
                killed_mid_job = job.poll() is None
                stop_node(worker, signal.SIGKILL)
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
            stop_node(worker, signal.SIGKILL)
        if head is not None:
            stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)
