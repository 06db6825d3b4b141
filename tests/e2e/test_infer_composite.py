"""infer_region with the cloud-free composite on by default, nothing set (synthetic catalog):
real clear S2 pixels are kept bit for bit away from the cloud-mask edges (feathered into the
synthesis near them), the synthesis fills the rest, and ``source``/``uncertainty`` say which.

The reference is computed on the whole image at once (``load_optical`` + the cube's cloud
test + nearest clear date), so it also checks that the block-wise job leaves no seam in the
cloud mask (clouds near a block edge are dilated across it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sar2opt.config import InferSpec
from tests.helpers.jobs import run_job, write_json

pytestmark = pytest.mark.slow

MAX_DT_DAYS = InferSpec().composite_max_dt_days  # the default the job runs with here
SMALL_AOI = {  # ~2.6 km inside the synthetic scene: 2 x 2 blocks, so block edges are crossed
    "type": "Polygon",
    "coordinates": [
        [[-55.012, -5.012], [-54.988, -5.012], [-54.988, -4.988], [-55.012, -4.988]]
        + [[-55.012, -5.012]]
    ],
}


@pytest.fixture(scope="module")
def composite(syn_catalog, tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("composite")
    aoi = write_json(root / "aoi.geojson", SMALL_AOI)
    out = root / "composite.zarr"
    r = run_job(
        [
            "jobs/infer_region.py",
            *("--aoi", aoi, "--checkpoint", tiny_ckpt, "--out", out),
            *("--start", "2023-07-01", "--end", "2023-08-31"),
            *("--config", "jobs/configs/demo.yaml", "--stac-url", syn_catalog["url"]),
            *("--set", "infer.tta_flips=2"),  # the composite: as configured by default
            *("--executor", "local"),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert MAX_DT_DAYS == 6  # on by default: half the S1 revisit (README)
    return out, aoi


def _whole_image_reference(store, aoi_path, url):
    """Per time step: (clear S2 found (H, W), nearest clear S2 reflectance (C, H, W))."""
    from sar2opt.aoi import load_aoi
    from sar2opt.config import load_config
    from sar2opt.cube.build import clear_mask
    from sar2opt.cube.load import load_optical
    from sar2opt.grid import GridSpec
    from sar2opt.stac import search_aoi

    cfg = load_config("jobs/configs/demo.yaml")
    cat = dataclasses.replace(cfg.catalog, stac_url=url)
    ds = xr.open_zarr(store)
    bands = list(cfg.catalog.opt_bands)
    assert [str(b) for b in ds.band.values] == bands
    items = search_aoi(cat, cat.s2_collection, load_aoi(aoi_path), "2023-06-20", "2023-09-10")
    s2 = load_optical(items, GridSpec.from_dict(ds.attrs["grid"]), bands)
    obs = np.asarray(s2.values, np.float32)
    clear = clear_mask(obs, bands, cfg.cube)  # the cube's cloud rule
    out = []
    for t in ds.time.values:
        dt = np.abs((pd.to_datetime(s2.time.values) - pd.Timestamp(t)) / pd.Timedelta(days=1))
        found = np.zeros(obs.shape[2:], bool)
        ref = np.full(obs.shape[1:], np.nan, np.float32)
        for k in np.argsort(dt, kind="stable"):  # nearest date first
            if dt[k] > MAX_DT_DAYS:
                break
            take = clear[k] & ~found
            ref[:, take] = obs[k][:, take]
            found |= take
        out.append((found, ref))
    return out


def test_composite_keeps_real_clear_s2_and_synthesises_the_rest(composite, syn_catalog) -> None:
    store, aoi = composite
    ds = xr.open_zarr(store)
    opt, src, unc = ds["optical"].values, ds["source"].values, ds["uncertainty"].values
    assert (src == 1).any() and (src == 2).any()  # both real S2 and synthesis
    assert set(np.unique(src)) <= {1, 2}  # the AOI's box is fully covered by S1
    from sar2opt.infer.periods import edge_weight
    from sar2opt.infer.run import FEATHER_PX

    ref = _whole_image_reference(store, aoi, syn_catalog["url"])
    for t, (found, s2) in enumerate(ref):
        keep = edge_weight(found, FEATHER_PX)  # the S2 share: < 1 near a cloud-mask edge
        np.testing.assert_array_equal(src[t] == 1, keep >= 0.5, err_msg=f"source, time {t}")
        far = keep == 1
        np.testing.assert_array_equal(opt[t][:, far], s2[:, far])  # real S2, bit for bit
        ramp = found & ~far
        if ramp.any():  # the feather: between the real S2 and the synthesis, not the S2
            assert (opt[t][:, ramp] != s2[:, ramp]).any(), f"time {t}"
        synth = src[t] == 2
        assert np.isfinite(opt[t][:, synth]).all()
        assert np.isfinite(unc[t][synth]).all() and (unc[t][synth] > 0).any()  # 2 flips
    assert 0.05 < (src == 2).mean() < 0.95, (src == 2).mean()  # clouds, but not everywhere
