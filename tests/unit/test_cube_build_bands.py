"""build_cube's band contract: default bands unchanged; ``dem`` and ``prior_<band>`` on request."""

import numpy as np
import pytest
from shapely.geometry import box

from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube import build
from sar2opt.cube.align import pair_prior
from sar2opt.cube.clean_s1 import db_to_linear
from sar2opt.grid import GridSpec, lonlat_bounds
from tests.helpers.rasters import make_item, write_tif

GRID = GridSpec(32721, 10.0, (700000, 9500000, 700320, 9500160))  # 16 x 32 px


def test_pair_prior_window_is_disjoint_from_the_target_window():
    s1 = np.array(["2023-07-20"], "datetime64[D]")
    s2 = np.array(
        ["2023-06-01", "2023-06-25", "2023-07-05", "2023-07-13", "2023-07-14", "2023-07-18"],
        "datetime64[D]",
    )
    # max_dt 6: prior must be strictly before 07-14 and no earlier than 07-14 - 20 d = 06-24
    assert pair_prior(s1, s2, 6, 20) == [[3, 2, 1]]
    assert pair_prior(s1, s2, 6, 0) == [[]]


@pytest.fixture
def scene(tmp_path, monkeypatch):
    s1 = []
    for k, day in enumerate(("2023-07-20", "2023-08-01")):
        vv = np.full(GRID.shape, -8.0 - k, "float32")
        a = {
            p: write_tif(
                tmp_path / f"{p}{k}.tif", db_to_linear(vv - 6 * j), GRID, -32768, "float32"
            )
            for j, p in enumerate(("vv", "vh"))
        }
        s1.append(make_item(f"s1_{k}", f"{day}T09:15:00Z", a, GRID))
    s2 = []
    # 07-05 clear (DN 500), 07-10 clear (DN 700), 07-19 clear (DN 900): S1 07-20 pairs with
    # 07-19; its prior (before 07-14, within 20 d) is 07-10 then 07-05
    for k, (day, dn) in enumerate((("2023-07-05", 500), ("2023-07-10", 700), ("2023-07-19", 900))):
        hrefs = {
            b: write_tif(
                tmp_path / f"{b}_{k}.tif", np.full(GRID.shape, dn + i, "uint16"), GRID, 0, "uint16"
            )
            for i, b in enumerate(("B02", "B03", "B04"))
        }
        s2.append(
            make_item(
                f"s2_{k}", f"{day}T14:00:00Z", hrefs, GRID, {"s2:processing_baseline": "03.00"}
            )
        )
    dem_arr = np.arange(GRID.shape[0] * GRID.shape[1], dtype="float32").reshape(GRID.shape)
    dem_arr[0, 0] = -32767  # Copernicus DEM nodata
    dem = [
        make_item(
            "dem",
            "2021-04-22T00:00:00Z",
            {"data": write_tif(tmp_path / "dem.tif", dem_arr, GRID, None, "float32")},
            GRID,
        )
    ]
    by_coll = {"sentinel-2-l2a": s2, "cop-dem-glo-30": dem}
    monkeypatch.setattr(build, "search_s1", lambda *a, **k: s1)
    monkeypatch.setattr(build, "search_aoi", lambda cat, coll, *a, **k: by_coll[coll])
    aoi = box(*lonlat_bounds(GRID)).buffer(-1e-5)
    return aoi, dem_arr


def _build(aoi, **kw):
    cat = CatalogSpec(opt_bands=("B02", "B03", "B04"), dem_collection=kw.pop("dem", None))
    spec = CubeSpec(epsg=32721, max_dt_days=6, cloud_dilate_px=0, **kw)
    return build.build_cube(
        aoi, "2023-07-20", "2023-08-01", catalog=cat, spec=spec, log=lambda *_: None
    )


def test_default_bands_are_unchanged(scene):
    aoi, _ = scene
    ds = _build(aoi)
    assert list(ds.band.values) == ["vv", "vh", "B02", "B03", "B04", "clear"]
    assert ds.attrs["dem_band"] is None and ds.attrs["prior_bands"] == []


def test_dem_and_prior_bands(scene):
    aoi, dem_arr = scene
    ds = _build(aoi, dem="cop-dem-glo-30", prior_days=20)
    bands = list(ds.band.values)
    assert bands == [
        "vv",
        "vh",
        "B02",
        "B03",
        "B04",
        "clear",
        "dem",
        "prior_B02",
        "prior_B03",
        "prior_B04",
    ]
    assert ds.attrs["dem_band"] == "dem"
    assert ds.attrs["prior_bands"] == ["prior_B02", "prior_B03", "prior_B04"]
    cube = ds.cube.sel(y=ds.y[5], x=ds.x[7])
    # target: 07-19 (DN 900) for S1 07-20; prior: 07-10 (DN 700), the latest before 07-14
    t0 = cube.isel(time=0)
    assert float(t0.sel(band="B02")) == pytest.approx(0.09, abs=1e-6)
    assert float(t0.sel(band="prior_B02")) == pytest.approx(0.07, abs=1e-6)
    assert float(t0.sel(band="prior_B04")) == pytest.approx(0.0702, abs=1e-6)
    # S1 08-01: nothing within ±6 d; prior window 07-06 .. 07-26 (exclusive end): 07-19
    t1 = cube.isel(time=1)
    assert np.isnan(float(t1.sel(band="B02"))) and float(t1.sel(band="clear")) == 0
    assert float(t1.sel(band="prior_B02")) == pytest.approx(0.09, abs=1e-6)
    # DEM in metres, same for every time step; nodata -> NaN
    dem = ds.cube.sel(band="dem").values
    np.testing.assert_array_equal(dem[0], dem[1])
    assert dem[0, 5, 7] == dem_arr[5, 7] and np.isnan(dem[0, 0, 0])
