"""Credentials planted in a run never reach its outputs or logs.

Every job these tests run has ``PLANTED_ENV`` (a Planetary Computer key, an AWS secret) in its
environment (``conftest.run_job``), and the catalog is searched through a URL with a user,
a password and a query token (``syn_catalog["secret_url"]``). The session's cube, training
run and mosaic (``syn_trained``: build_cube, train; ``syn_mosaic``: infer_region) are reused;
monitor (on a copy of the mosaic) and evaluate run here on them. Every file they wrote (Zarr
metadata and chunks, STAC items, checkpoint and its metadata, metrics.csv, TensorBoard events,
Ray Train's files, report.html, scores.json) and everything they printed is searched for each
secret.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.jobs import PLANTED, run_job, syn_args

pytestmark = pytest.mark.slow


def test_planted_secrets_reach_no_output_and_no_log(tmp_path, syn_catalog, syn_trained, syn_mosaic):
    url = syn_catalog["secret_url"]
    ckpt, cube = syn_trained["ckpt"], syn_trained["cube"]
    mosaic, report = tmp_path / "mosaic.zarr", tmp_path / "eval"
    shutil.copytree(syn_mosaic["out"], mosaic)  # monitor writes to its store: not the shared one
    runs = {
        "infer_region": syn_mosaic["run"],
        "monitor": run_job(
            ["jobs/monitor.py", "--aoi", syn_args(url)[1], "--checkpoint", ckpt, "--store",
             mosaic, "--stac-url", url, "--until", "2023-12-31", "--executor", "local"]
        ),
        "evaluate": run_job(
            ["jobs/evaluate.py", "--cube", cube, "--checkpoint", ckpt, "--out", report,
             "--seeds", "0", "--block-px", "16", "--buffer-px", "2", "--residual-steps", "0"]
        ),
    }  # fmt: skip
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-2000:])

    roots = [cube, syn_trained["train"], syn_mosaic["out"], mosaic, report]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    names = [p.name for p in files]
    # what each job writes is among the files searched
    assert any(n.startswith("events.out.tfevents") for n in names), "no TensorBoard events"
    assert "model.pt" in names and "config.yaml" in names and "metrics.csv" in names
    assert any(p.suffix == ".json" and "stac" in p.parts for p in files), "no STAC items"
    assert "report.html" in names and "scores.json" in names
    assert sum(n == "zarr.json" for n in names) >= 2  # the cube's and the mosaic's attrs
    # the catalog URL is recorded, without its credentials
    attrs = json.loads((syn_mosaic["out"] / "zarr.json").read_text())["attributes"]
    assert attrs["config"]["catalog"]["stac_url"] == syn_catalog["url"]

    logs = syn_trained["logs"] + "".join(r.stdout + r.stderr for r in runs.values())
    assert syn_catalog["url"] in logs  # the jobs do print the (public) URL
    for secret in PLANTED:
        assert secret not in logs, "a secret was printed"
        for f in files:
            assert secret.encode() not in f.read_bytes(), f"a secret leaked into {f}"
