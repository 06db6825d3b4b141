"""The walking skeleton on the built-in synthetic scene: STAC -> cube -> train -> infer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import xarray as xr

from tests.helpers.jobs import SYN_EPOCHS

pytestmark = pytest.mark.slow


def test_cube_is_on_one_grid_with_pairs_and_provenance(syn_catalog, syn_trained):
    import rioxarray  # noqa: F401

    ds = xr.open_zarr(syn_trained["cube"])
    cube = ds["cube"]
    assert cube.dims == ("time", "band", "y", "x")
    assert list(cube.band.values) == ["vv", "vh", "B02", "B03", "B04", "B08", "clear"]
    s1_ids = [it["id"] for it in syn_catalog["items"] if it["collection"] == "sentinel-1-rtc"]
    assert cube.sizes["time"] == len(s1_ids)
    assert cube.rio.crs.to_epsg() == 32721
    res = float(cube.x[1] - cube.x[0])
    assert res == 10.0 and float(cube.y[0] - cube.y[1]) == 10.0
    sar = cube.sel(band=["vv", "vh"]).values
    assert np.isfinite(sar).mean() > 0.99 and -30 < np.nanmedian(sar) < 0  # dB, not linear
    clear = cube.sel(band="clear").values
    assert 0.2 < clear.mean() < 1.0  # clouds were flagged, yet most pixels paired
    opt = cube.sel(band=["B02", "B03", "B04", "B08"]).values
    assert np.isnan(np.moveaxis(opt, 1, 0)[:, clear == 0]).all()  # band-first, then the mask
    assert 0.0 < np.nanmedian(opt[:, 3]) < 0.5  # NIR reflectance
    assert ds.attrs["git_sha"] and ds.attrs["grid"]["epsg"] == 32721
    assert sorted(x for g in json.loads(ds.attrs["s1_items"]) for x in g) == sorted(s1_ids)


def test_training_loss_fell_and_checkpoint_is_safe(syn_trained):
    from sar2opt.train.checkpoint import load_generator

    rows = list(csv.DictReader(open(syn_trained["train"] / "metrics.csv")))
    assert len(rows) == SYN_EPOCHS
    l1 = [float(r["g_l1"]) for r in rows]
    assert l1[-1] < 0.7 * l1[0], l1
    blob = torch.load(syn_trained["ckpt"] / "model.pt", weights_only=True)
    assert blob["meta"]["out_bands"] == ["B02", "B03", "B04", "B08"]
    gen, meta = load_generator(syn_trained["ckpt"])
    assert meta["config"]["train"]["epochs"] == SYN_EPOCHS and meta["git_sha"]
    assert gen(torch.zeros(1, 2, 64, 64)).shape == (1, 4, 64, 64)


def test_infer_region_writes_a_georeferenced_mosaic_that_beats_the_baseline(
    syn_trained, syn_mosaic
):
    import rioxarray  # noqa: F401

    from sar2opt.config import config_from_dict
    from sar2opt.evaluate.compare import compare_mosaic_to_cube
    from sar2opt.train.checkpoint import load_generator

    out = syn_mosaic["out"]
    mosaic = xr.open_zarr(out, consolidated=False)
    pred = mosaic["optical"]
    cube = xr.open_zarr(syn_trained["cube"])["cube"]
    assert pred.dims == ("time", "band", "y", "x")
    assert pred.rio.crs.to_epsg() == 32721
    np.testing.assert_array_equal(pred.time.values, cube.time.values)  # one slice per S1 date
    np.testing.assert_allclose(pred.x.values, cube.x.values)  # same GridSpec as the cube
    assert np.isfinite(pred.values).mean() > 0.99
    _, meta = load_generator(syn_trained["ckpt"])
    patches = config_from_dict(meta["config"], saved=True).patches
    scores = compare_mosaic_to_cube(out, syn_trained["cube"], meta["norm"]["opt_mean"], patches)
    model, base = scores["rows"]
    assert model["mae"] < base["mae"], scores  # a trained model must beat the mean colour
