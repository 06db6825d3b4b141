"""Credentials planted in the environment of a run never reach its outputs or logs."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.e2e.conftest import run_job, syn_args

pytestmark = pytest.mark.slow


def test_planted_secrets_do_not_leak(tmp_path, syn_catalog, tiny_ckpt):
    planted = {
        "PC_SDK_SUBSCRIPTION_KEY": "pc" + secrets.token_hex(16),
        "AWS_SECRET_ACCESS_KEY": "aws" + secrets.token_hex(16),
    }
    env = os.environ | planted
    common = syn_args(syn_catalog["url"])
    r1 = run_job(["jobs/build_cube.py", *common, "--out", tmp_path / "cube.zarr"], env=env)
    r2 = run_job(
        [
            "jobs/infer_region.py",
            *common,
            "--checkpoint",
            tiny_ckpt,
            "--out",
            tmp_path / "mosaic.zarr",
        ],
        env=env,
    )
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr[-2000:] + r2.stderr[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10  # zarr metadata + chunks of both stores
    logs = r1.stdout + r1.stderr + r2.stdout + r2.stderr
    for value in planted.values():
        assert value not in logs
        for f in files:
            assert value.encode() not in f.read_bytes(), f"{value} leaked into {f}"
