"""jobs/infer_region.py with a checkpoint that reads SAR + prior clear S2 + DEM (SOD), on the
synthetic catalog: it reads every input, says so, and ``source`` tells the pixels that had a
prior from those that had none; without a DEM collection it stops with one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sar2opt.infer.composite import SOURCE_SYNTH, SOURCE_SYNTH_PRIOR
from tests.helpers.jobs import SMALL_AOI, one_error_line, run_job, syn_args, write_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sod_ckpt(tmp_path_factory):
    """An untrained SOD checkpoint (as ``tiny_ckpt``), its cube's prior 6-36 days back."""
    from sar2opt.config import Config, CubeSpec, ModelSpec
    from sar2opt.train.checkpoint import save_untrained_checkpoint

    cfg = Config(
        model=ModelSpec(ngf=8, depth=5, input_set="SOD"),
        cube=CubeSpec(max_dt_days=6, prior_days=30),
    )
    return save_untrained_checkpoint(tmp_path_factory.mktemp("sod") / "ckpt", cfg, git_sha="t")


def _args(url, aoi, ckpt, *extra):
    return [
        "jobs/infer_region.py",
        *syn_args(url, aoi=aoi),
        *("--checkpoint", ckpt, "--executor", "local"),
        *extra,
    ]


def test_sod_checkpoint_runs_on_the_synthetic_region(syn_catalog, sod_ckpt, tmp_path) -> None:
    aoi = write_json(tmp_path / "aoi.geojson", SMALL_AOI)
    out = tmp_path / "sod.zarr"
    r = run_job(
        [
            *_args(syn_catalog["url"], aoi, sod_ckpt, "--out", out),
            *("--set", "catalog.dem_collection=cop-dem-glo-30"),
            *("--set", "infer.composite_max_dt_days=0"),  # synthesis everywhere: its rules
        ]
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "inputs: SOD: SAR, prior = latest clear S2 6-36 d before each date" in r.stdout
    assert "DEM = 1 cop-dem-glo-30 items" in r.stdout
    ds = xr.open_zarr(out)
    source = ds["source"].values
    assert "synthesis_with_prior" in ds["source"].attrs["flag_meanings"]
    times = [str(t)[:10] for t in ds.time.values]
    assert times == ["2023-07-01", "2023-07-13", "2023-07-25", "2023-08-06"]
    # 07-01: no S2 before it in the catalog, so no prior anywhere: synthesis from SAR + DEM
    assert (source[0] == SOURCE_SYNTH).all()
    # later dates: a prior wherever an earlier S2 was clear (clouds leave a few holes)
    for t in range(1, 4):
        assert set(np.unique(source[t])) <= {SOURCE_SYNTH, SOURCE_SYNTH_PRIOR}
        assert (source[t] == SOURCE_SYNTH_PRIOR).mean() > 0.5
    assert np.isfinite(ds["optical"].values).all()


def test_sod_checkpoint_without_a_dem_collection_stops_with_one_line(
    syn_catalog, sod_ckpt, tmp_path
) -> None:
    aoi = write_json(tmp_path / "aoi.geojson", SMALL_AOI)
    r = run_job([*_args(syn_catalog["url"], aoi, sod_ckpt, "--out", tmp_path / "x.zarr")])
    line = one_error_line(r)
    assert "input set SOD, which reads a DEM" in line and "catalog.dem_collection" in line
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "x.zarr.partial").exists()


@pytest.fixture(scope="module")
def sc_ckpt(tmp_path_factory):
    """An untrained cloud-removal checkpoint (SC), its cube's same-date window ±6 days, with
    the real recipe's scene-fit reference: the job reads each strip one block wider and
    blends the blocks' fits (``run.fit_lattice``); untrained, the model is its reference."""
    from sar2opt.config import Config, CubeSpec, ModelSpec
    from sar2opt.train.checkpoint import save_untrained_checkpoint

    spec = ModelSpec(ngf=8, depth=5, input_set="SC", reference="scene_fit")
    cfg = Config(model=spec, cube=CubeSpec(max_dt_days=6))
    return save_untrained_checkpoint(tmp_path_factory.mktemp("sc") / "ckpt", cfg, git_sha="t")


def test_sc_checkpoint_removes_clouds_on_the_synthetic_region(
    syn_catalog, sc_ckpt, tmp_path
) -> None:
    """With the composite on, the clear pixels of each date stay real S2 and the model fills
    the rest from that date's cloudy S2: ``source`` is "sentinel-2" or "cloud removed"."""
    from sar2opt.infer.composite import SOURCE_CLOUD_REMOVED, SOURCE_S2

    aoi = write_json(tmp_path / "aoi.geojson", SMALL_AOI)
    out = tmp_path / "sc.zarr"
    r = run_job(
        [
            *_args(syn_catalog["url"], aoi, sc_ckpt, "--out", out),
            *("--set", "infer.composite_max_dt_days=6"),
        ]
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "inputs: SC: SAR, same-date S2 = nearest S2 within ±6 d of each date" in r.stdout
    ds = xr.open_zarr(out)
    assert "cloud_removed" in ds["source"].attrs["flag_meanings"]
    source = ds["source"].values
    # every date has an S2 observation within ±6 d: real where clear, cloud removed elsewhere
    assert set(np.unique(source)) == {SOURCE_S2, SOURCE_CLOUD_REMOVED}
    s2_frac = [(s == SOURCE_S2).mean() for s in source]
    assert s2_frac[1] > 0.9  # 07-13: a clear S2 that day
    assert min(s2_frac) < 0.9  # a cloudy date: filled by the model
    assert np.isfinite(ds["optical"].values).all()
