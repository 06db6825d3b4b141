"""The session's token-auth Ray head (`ray start --head`, ``ray_head``): `ray job submit --
python jobs/infer_region.py` gives the same mosaic; the Jobs API refuses requests without the
token; a job started without RAY_ADDRESS does not join this head, though `ray.init()` would."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from tests.helpers.jobs import REPO, assert_same_store, small_infer_args
from tests.helpers.ray_cluster import auth_headers, submit_cmd

pytestmark = pytest.mark.slow


def test_job_submit_gives_the_same_mosaic(syn_catalog, tiny_ckpt, small_clean, ray_head):
    """The submitted job's mosaic is the one the same command makes alone (the session's
    uninterrupted run on a private local Ray): every variable, bit for bit."""
    args = small_infer_args(syn_catalog["url"], small_clean["aoi"], tiny_ckpt)[1:]
    submitted = ray_head["temp"] / "mosaic-job.zarr"
    cmd = submit_cmd(ray_head["url"], "jobs/infer_region.py", [*args, "--out", submitted])
    r = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=ray_head["env"]
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "succeeded" in r.stdout + r.stderr
    assert_same_store(submitted, small_clean["out"])


def _wait_job(url: str, headers: dict, job_id: str, timeout_s: float = 600) -> dict:
    deadline = time.time() + timeout_s
    while True:
        info = requests.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=10).json()
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or time.time() > deadline:
            return info
        time.sleep(0.5)


def test_jobs_api_refuses_requests_without_the_token(ray_head, tmp_path):
    """ShadowRay (CVE-2023-48022): whoever reaches the Jobs API runs code. Without the token
    (or with another one) the head answers 401/403 and runs nothing; with it, the job runs."""
    url, ok = ray_head["url"], auth_headers(ray_head["env"])
    flag = tmp_path / "ran"
    job = {"entrypoint": f"{sys.executable} -c \"open('{flag}', 'w').close()\""}
    for headers, want in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        assert requests.get(f"{url}/api/jobs/", headers=headers, timeout=10).status_code == want
        r = requests.post(f"{url}/api/jobs/", json=job, headers=headers, timeout=60)
        assert r.status_code == want, (r.status_code, r.text[:300])
    listed = requests.get(f"{url}/api/jobs/", headers=ok, timeout=10)
    assert listed.status_code == 200
    assert not [j for j in listed.json() if str(flag) in j["entrypoint"]]  # nothing was queued
    assert not flag.exists()

    r = requests.post(f"{url}/api/jobs/", json=job, headers=ok, timeout=60)
    assert r.status_code == 200, r.text[:300]
    info = _wait_job(url, ok, r.json()["submission_id"])
    assert info["status"] == "SUCCEEDED", json.dumps(info)[:2000]
    assert flag.exists()


GCS_PROBE = "import ray; {init}; print('GCS', ray.get_runtime_context().gcs_address)"


def _probe(init: str, env: dict) -> subprocess.CompletedProcess:
    code = GCS_PROBE.format(init=init)
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def _gcs(r: subprocess.CompletedProcess) -> str:
    return next(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("GCS "))


def test_job_without_ray_address_does_not_join_a_foreign_head(ray_head):
    """A `ray start --head` runs on the machine (this module's head: another user's, or a
    test's). With RAY_ADDRESS unset, a bare `ray.init()` joins it; sar2opt's init_ray, which
    every job uses, starts a private local cluster instead and says so on stderr."""
    env = ray_head["env"]
    assert "RAY_ADDRESS" not in env
    assert _gcs(_probe("ray.init()", env)) == ray_head["gcs"]  # the head is there to join
    r = _probe("from sar2opt.runtime import init_ray; init_ray()", env)
    assert _gcs(r) != ray_head["gcs"]
    assert "ray: starting a private local cluster (RAY_ADDRESS is not set)" in r.stderr
