"""`ray start --head` + `ray job submit -- python jobs/infer_region.py` gives the same mosaic."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.e2e.conftest import REPO, run_job, syn_args
from tests.e2e.ray_cluster import start_head, stop_node, submit_cmd, token_env

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head():
    """A real Ray head (GCS, raylet, dashboard, Jobs API) on 127.0.0.1, stopped afterwards."""
    temp = Path(tempfile.mkdtemp(prefix="s2o-head-", dir="/tmp"))
    env = token_env()
    proc = None
    try:
        proc, url, _ = start_head(temp, env)
        yield {"url": url, "env": env}
    finally:
        if proc is not None:
            stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_gives_the_same_mosaic(syn_catalog, syn_trained, ray_head):
    local = syn_catalog["root"] / "mosaic-local.zarr"
    args = [*syn_args(syn_catalog["url"]), "--checkpoint", syn_trained["ckpt"]]
    r = run_job(["jobs/infer_region.py", *args, "--out", local])
    assert r.returncode == 0, r.stderr
    submitted = syn_catalog["root"] / "mosaic-job.zarr"
    cmd = submit_cmd(ray_head["url"], "jobs/infer_region.py", [*args, "--out", submitted])
    r = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=ray_head["env"]
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "succeeded" in r.stdout + r.stderr
    a, b = xr.open_zarr(local), xr.open_zarr(submitted)
    va, vb = (ds[list(ds.data_vars)[0]] for ds in (a, b))
    assert va.dims == vb.dims and va.shape == vb.shape
    np.testing.assert_allclose(va.values, vb.values, atol=1e-5, equal_nan=True)
