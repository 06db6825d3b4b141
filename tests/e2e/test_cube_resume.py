"""jobs/build_cube.py killed half-way, re-run: the same cube as an uninterrupted (Ray) build."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import xarray as xr

from tests.helpers.jobs import PY, REPO, SMALL_AOI, SYN_DATES, one_error_line, run_job, write_json

pytestmark = pytest.mark.slow


def _args(aoi, out, url, *extra):
    return [
        "jobs/build_cube.py",
        "--aoi",
        aoi,
        "--start",
        SYN_DATES[0],
        "--end",
        SYN_DATES[1],
        "--out",
        out,
        "--config",
        "jobs/configs/demo.yaml",
        "--stac-url",
        url,
        "--set",
        "cube.tile_px=128",
        "--set",
        "cube.chunk_px=128",
        "--set",
        "cube.cpus_per_tile=0.5",
        *extra,
    ]


def test_killed_build_resumes_to_the_uninterrupted_cube(tmp_path, syn_catalog):
    aoi = write_json(tmp_path / "small.geojson", SMALL_AOI)
    url = syn_catalog["url"]

    # uninterrupted, tiles as Ray tasks
    full = tmp_path / "full.zarr"
    r = run_job(_args(aoi, full, url, "--executor", "ray"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "tiles 9/9 done" in r.stdout

    # serial, killed (SIGKILL: no clean-up runs) once 3 tiles are reported done
    out = tmp_path / "cube.zarr"
    proc = subprocess.Popen(
        [PY, *map(str, _args(aoi, out, url, "--executor", "serial"))],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("tiles 3/9 done"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    build = json.loads((out / "zarr.json").read_text())["attributes"]["build"]
    assert build["status"] == "incomplete"
    assert 3 <= len(list((out / "_tiles").iterdir())) < 9

    # re-run: resumes, skipping the finished tiles
    r = run_job(_args(aoi, out, url), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "already complete (resuming)" in r.stdout
    a, b = xr.open_zarr(full), xr.open_zarr(out)
    np.testing.assert_array_equal(a.cube.values, b.cube.values)
    for c in ("time", "band", "y", "x"):
        np.testing.assert_array_equal(a[c].values, b[c].values)
    assert b.attrs["build"]["status"] == "complete"
    assert a.attrs["s2_items_per_time"] == b.attrs["s2_items_per_time"]
    assert int(np.isfinite(b.cube.sel(band="vv").values).sum()) > 0

    # complete: refused without --overwrite
    r = run_job(_args(aoi, out, url), timeout=300)
    assert "--overwrite" in one_error_line(r)
