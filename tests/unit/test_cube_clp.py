"""S2 items that carry a ``CLP`` asset (cloud probability, BioMassters): the cube (whole and
tiled) and the inference readers (``read_prior``, ``read_cloudy``) test clouds with it, so
snow (bright and white, CLP 0) is clear and a haze with CLP 80 is cloud; items without CLP
keep the brightness test. CLP is a mask: never a cube band, never scaled as reflectance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from shapely.geometry import box

from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube import build, tiled_build
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer import read
from tests.helpers.rasters import make_item, write_s1_assets, write_tif

GRID = GridSpec(32721, 10.0, (700000, 9500000, 700320, 9500160))  # 16 x 32 px
CAT = CatalogSpec(opt_bands=("B02", "B03", "B04", "B08"))
# each S1 date pairs with its own S2 (±1 d); the prior looks 20 days further back
SPEC = CubeSpec(
    epsg=32721, max_dt_days=1, prior_days=20, cloud_dilate_px=1, chunk_px=8, tile_px=8,
    cloudy=True,
)  # fmt: skip
DATES = ("2023-07-01", "2023-07-31")
SNOW_DN = (6000, 6100, 6200, 5000)  # bright and white: the brightness test calls it cloud
FOREST_DN = (300, 500, 300, 3000)  # dark and green: clear by the brightness test
HAZE_COLS = slice(0, 8)  # where the haze date's CLP says 80 (10 elsewhere)
# 07-08 snow with CLP 0; 07-12 forest under a haze the CLP sees (cols 0-7, CLP 80) and the
# brightness test does not; 07-21 snow again, with no CLP asset (the brightness test)
S2_DAYS = ("2023-07-08", "2023-07-12", "2023-07-21")


def _s2(tmp_path, k, day, dn, clp) -> dict:
    hrefs = {
        b: write_tif(tmp_path / f"{b}_{k}.tif", np.full(GRID.shape, v), GRID, 0, "uint16")
        for b, v in zip(CAT.opt_bands, dn, strict=True)
    }
    if clp is not None:
        hrefs["CLP"] = write_tif(tmp_path / f"clp_{k}.tif", clp, GRID, 255, "uint8")
    item = make_item(f"s2_{k}", f"{day}T14:00:00Z", hrefs, GRID, {"platform": "Sentinel-2B"})
    if clp is not None:  # as catalog.items.s2_item writes it
        item["assets"]["CLP"]["roles"] = ["cloud"]
        item["assets"]["CLP"]["raster:bands"] = [{"data_type": "uint8", "nodata": 255}]
    return item


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("clp")
    rng = np.random.default_rng(3)
    s1 = []
    for k, day in enumerate(S2_DAYS):
        a = write_s1_assets(tmp_path, k, GRID, rng, CAT.sar_bands)
        s1.append(make_item(f"s1_{k}", f"{day}T09:15:00Z", a, GRID))
    haze = np.full(GRID.shape, 10, "uint8")
    haze[:, HAZE_COLS] = 80
    s2 = [
        _s2(tmp_path, 0, S2_DAYS[0], SNOW_DN, np.zeros(GRID.shape, "uint8")),
        _s2(tmp_path, 1, S2_DAYS[1], FOREST_DN, haze),
        _s2(tmp_path, 2, S2_DAYS[2], SNOW_DN, None),
    ]
    return s1, s2


def _patch(mp, s1, s2):
    mp.setattr(build, "search_s1", lambda *a, **k: s1)
    mp.setattr(build, "search_aoi", lambda *a, **k: s2)
    return box(*lonlat_bounds(GRID)).buffer(-1e-5)


@pytest.fixture(scope="module")
def cubes(items, tmp_path_factory):
    """build_cube (stackstac, whole grid) and the tiled build (windowed reader, 8 px tiles)."""
    read.close_all()
    out = tmp_path_factory.mktemp("clp-cube") / "tiled.zarr"
    with pytest.MonkeyPatch.context() as mp:
        aoi = _patch(mp, *items)
        whole = build.build_cube(aoi, *DATES, catalog=CAT, spec=SPEC, log=lambda *_: None)
        tiled_build.build_tiled(aoi, *DATES, catalog=CAT, spec=SPEC, out=out, log=lambda *_: None)
    return whole, xr.open_zarr(out)


def _band(ds, name) -> np.ndarray:
    return ds.cube.sel(band=name).values


def test_the_cube_tests_clouds_with_clp_where_items_carry_it(cubes) -> None:
    whole, tiled = cubes
    np.testing.assert_array_equal(whole.cube.values, tiled.cube.values)
    assert list(whole.band.values) == build.cube_bands(CAT, SPEC)  # CLP is no cube band
    clear = _band(whole, "clear")
    # 07-08: snow with CLP 0 is clear, and its reflectance is the target
    assert (clear[0] == 1).all()
    snow, forest = (np.array(v, "float32")[:, None, None] / 1e4 for v in (SNOW_DN, FOREST_DN))
    np.testing.assert_allclose(whole.cube.values[0, 2:6], np.broadcast_to(snow, (4, 16, 32)))
    # 07-12: the haze (CLP 80, cols 0-7) is cloud, dilated by 1 px; the rest (CLP 10) clear
    assert (clear[1][:, :9] == 0).all() and (clear[1][:, 9:] == 1).all()
    assert (_band(whole, "cloud_mask")[1] == 1 - clear[1]).all()
    # 07-21 carries no CLP: the brightness test, as before, calls its snow cloud
    assert (clear[2] == 0).all() and (_band(whole, "cloud_mask")[2] == 1).all()
    # the prior of 07-21: 07-12 where it is clear, else the snow of 07-08 (clear by its CLP)
    prior = whole.cube.sel(band=[f"prior_{b}" for b in CAT.opt_bands]).values[2]
    np.testing.assert_allclose(prior[:, :, 9:], np.broadcast_to(forest, (4, 16, 23)))
    np.testing.assert_allclose(prior[:, :, :9], np.broadcast_to(snow, (4, 16, 9)))


@pytest.mark.parametrize("window", [(0, 0, 16, 32), (3, 5, 8, 8)], ids=["whole", "window"])
def test_the_inference_readers_read_the_cube_with_clp(items, cubes, window) -> None:
    """``read_prior``/``read_cloudy`` (what ``CatalogAux`` calls) on a grid give the cube's
    prior and cloudy bands there (halo of ``cloud_dilate_px``, then cropped)."""
    _, s2 = items
    whole, _ = cubes
    r, c, h, w = window
    m = SPEC.cloud_dilate_px
    top, left = max(r - m, 0), max(c - m, 0)
    sub = GRID.subgrid(top, left, min(r + h + m, 16) - top, min(c + w + m, 32) - left)
    crop = (slice(None), slice(r - top, r - top + h), slice(c - left, c - left + w))
    prior_bands = [f"prior_{b}" for b in CAT.opt_bands]
    cloudy_bands = build.cloudy_bands(CAT.opt_bands, SPEC)
    kw = {"opt_bands": CAT.opt_bands, "spec": SPEC}
    for t, when in enumerate(whole.time.values):
        iso = str(when)[:19] + "Z"
        cube = whole.cube.isel(time=t, y=slice(r, r + h), x=slice(c, c + w))
        np.testing.assert_array_equal(
            build.read_prior(s2, sub, iso, **kw)[crop], cube.sel(band=prior_bands).values
        )
        np.testing.assert_array_equal(
            build.read_cloudy(s2, sub, iso, **kw)[crop], cube.sel(band=cloudy_bands).values
        )
    # the snow of 07-08 is a clear same-date observation and the prior of 07-12
    assert (build.read_cloudy(s2, GRID, "2023-07-08T09:15:00Z", **kw)[-1] == 0).all()
    assert np.isfinite(build.read_prior(s2, GRID, "2023-07-12T09:15:00Z", **kw)).all()


def test_without_clp_the_cube_is_the_brightness_test(items, tmp_path) -> None:
    """The same items less their CLP assets: snow is cloud, the haze is clear (as before)."""
    s1, s2 = items
    bare = [{**it, "assets": {k: v for k, v in it["assets"].items() if k != "CLP"}} for it in s2]
    with pytest.MonkeyPatch.context() as mp:
        aoi = _patch(mp, s1, bare)
        ds = build.build_cube(aoi, *DATES, catalog=CAT, spec=SPEC, log=lambda *_: None)
    clear = _band(ds, "clear")
    assert (clear[0] == 0).all() and (clear[1] == 1).all() and (clear[2] == 0).all()
    assert np.isnan(ds.cube.sel(band="prior_B02").values[2]).sum() == 0  # 07-12 everywhere


@pytest.mark.parametrize(
    "grid",
    [GRID.subgrid(-2, 3, 12, 40), GridSpec.covering(32721, 20.0, GRID.bounds)],
    ids=["aligned", "20m"],
)
def test_clp_is_read_as_a_mask_by_both_readers(items, grid) -> None:
    """``load_clp`` (stackstac) and ``read_clp`` (windows): the same percent values, nearest
    neighbour (no value between 10 and 80 on a coarser grid), 0 kept, NaN outside the raster
    and for the item without CLP; None when no item carries one."""
    from sar2opt.cube.load import load_clp
    from sar2opt.cube.window_load import read_clp

    _, s2 = items
    read.close_all()
    fast = read_clp(s2, grid)
    ref = load_clp(s2, grid, chunk_px=8).values
    np.testing.assert_array_equal(fast, ref)
    assert fast.shape == (3, *grid.shape)
    assert set(np.unique(fast[0][np.isfinite(fast[0])])) == {0.0}
    assert set(np.unique(fast[1][np.isfinite(fast[1])])) == {10.0, 80.0}
    assert np.isnan(fast[2]).all()
    if grid.res_m == GRID.res_m:  # 2 rows above the raster, 11 columns past its east edge
        assert np.isnan(fast[:, :2]).all() and np.isnan(fast[:, :, -11:]).all()
        assert np.isfinite(fast[:2, 2:, :-11]).all()
    assert read_clp(s2[2:], grid) is None and load_clp(s2[2:], grid) is None


def test_the_composite_reads_clp_as_the_cube_does(items, cubes) -> None:
    """Inference's clear-S2 composite (``run.read_clear_s2``) flags by the cube's rule too:
    the snow with CLP 0 is clear, the haze with CLP 80 is not, snow without CLP is cloud."""
    from sar2opt.infer.run import CompositeSpec, read_clear_s2

    _, s2 = items
    whole, _ = cubes
    spec = CompositeSpec(max_dt_days=1, opt_bands=CAT.opt_bands, rule=SPEC)
    obs, clear, _ = read_clear_s2(s2, GRID, ("B04",), spec)
    assert obs.shape == (3, 1, *GRID.shape)
    assert clear[0].all() and not clear[1][:, :8].any() and not clear[2].any()
    np.testing.assert_array_equal(clear, _band(whole, "clear") == 1)  # one date, one S2 each
