"""``sar2opt synth`` output runs through the unchanged build_cube job (served by the STAC API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from sar2opt.catalog.server import CatalogServer
from sar2opt.cli import main

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_build_cube_job_runs_on_synth_region(tmp_path):
    cat = tmp_path / "catalog"
    bbox = [-55.01, -5.01, -54.99, -4.99]
    argv = ["synth", "--bbox", *map(str, bbox), "--start", "2023-07-01", "--end", "2023-07-20"]
    assert main(argv + ["--out", str(cat)]) == 0
    w, s, e, n = -55.006, -5.006, -54.994, -4.994
    aoi = tmp_path / "aoi.geojson"
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    out = tmp_path / "cube.zarr"
    with CatalogServer(cat) as server:
        cmd = [sys.executable, "jobs/build_cube.py", "--aoi", str(aoi), "--start", "2023-07-01"]
        cmd += ["--end", "2023-07-20", "--config", "jobs/configs/demo.yaml", "--out", str(out)]
        cmd += ["--stac-url", server.url]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cube = xr.open_zarr(out)["cube"]
    assert cube.sizes["time"] == 2  # S1 on 07-01 and 07-13
    bands = list(cube.band.values)
    assert {"vv", "vh", "B02", "B08", "clear"} <= set(bands)
    vv = cube.sel(band="vv").values
    assert (vv > -30).mean() > 0.99 and (vv < 5).mean() > 0.99  # dB of lowland gamma0
