"""`make demo-real` on the real MultiEarth sample (runs whenever ../shared/data exists)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from tests.helpers.data import MULTIEARTH, requires_shared_data
from tests.helpers.jobs import PLANTED_ENV, run_job

pytestmark = [pytest.mark.slow, pytest.mark.heavy, requires_shared_data]


def test_demo_real_runs_end_to_end(tmp_path):
    import rioxarray  # noqa: F401

    out = tmp_path / "demo-real"
    r = run_job(
        [
            "jobs/demo.py",
            "--source",
            "multiearth",
            "--src",
            MULTIEARTH,
            "--out",
            out,
            "--set",
            "train.epochs=2",  # every stage end to end; nothing here asks a well-trained net
        ],
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for name in ("cube.zarr", "train/checkpoint/model.pt", "mosaic.zarr", "quicklook.png"):
        assert (out / name).exists(), name
        assert str(out / name).split("/model.pt")[0] in r.stdout or name.endswith("model.pt")
    cube = xr.open_zarr(out / "cube.zarr")["cube"]
    # the four real S1 dates of the sample, in dB
    assert [str(t)[:10] for t in cube.time.values] == [
        "2019-05-27",
        "2019-06-08",
        "2019-06-20",
        "2019-07-02",
    ]
    assert -25 < float(np.nanmedian(cube.sel(band="vv"))) < -3
    # the real clouds were caught: some but not all pixels are clear
    clear = cube.sel(band="clear").values
    assert 0.3 < clear.mean() < 0.99
    mosaic = xr.open_zarr(out / "mosaic.zarr", consolidated=False)
    pred = mosaic["optical"]
    assert pred.rio.crs.to_epsg() == 32721 and pred.sizes["time"] == 4
    # the product: one image per month, May to July 2019, each month's evidence printed
    monthly = xr.open_zarr(out / "monthly.zarr", consolidated=False)
    assert [str(t)[:7] for t in monthly.time.values] == ["2019-05", "2019-06", "2019-07"]
    assert monthly.attrs["period"] == "1M" and "=== monthly mosaic: 3 period(s) of 1M" in r.stdout
    assert np.isfinite(monthly["optical"].values).mean() > 0.5
    scores = json.loads((out / "scores.json").read_text())
    assert [row["name"] for row in scores["rows"]] == ["model", "baseline: train mean colour"]
    assert all(np.isfinite(row["mae"]) for row in scores["rows"])
    # run_job plants secrets in the demo's environment: none reaches a file it wrote or its log
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.name == "zarr.json" for p in files)
    for secret in PLANTED_ENV.values():
        assert secret not in r.stdout + r.stderr, "a secret was printed"
        for f in files:
            assert secret.encode() not in f.read_bytes(), f"a secret leaked into {f}"
