"""The tiled build's windowed reader gives the cube the stackstac reader gives, on the synthetic
scene: S1 dB, S2 scale/offset, nodata, frames mosaicked, cloud masks, DEM and prior bands, on a
grid aligned with the assets (windowed reads) and on grids that are not (warped reads)."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import rasterio

from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube.build import assemble, cube_bands, inputs_from_items, load_pixels
from sar2opt.grid import GridSpec, grid_for_lonlat_bounds, lonlat_bounds
from sar2opt.infer import read

SIZE_KM = 1.28  # 128 x 128 px at 10 m
CAT = CatalogSpec(stac_url="http://127.0.0.1:1/stac", dem_collection="cop-dem-glo-30")
SPEC = CubeSpec(epsg=32721, max_dt_days=6, cloud_dilate_px=2, prior_days=12, chunk_px=64)


def _with_nodata(item, asset, path, value, rows, cols, *, tagged=True) -> dict:
    """A copy of ``item`` whose ``asset`` is a GeoTIFF copy holding ``value`` in a block of
    pixels: the file's nodata value (``tagged``), or a value only the profile's rules catch."""
    with rasterio.open(item["assets"][asset]["href"]) as src:
        arr, profile = src.read(1), src.profile
    arr[rows, cols] = value
    profile.update(driver="GTiff", nodata=value if tagged else None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
    out = copy.deepcopy(item)
    out["assets"][asset]["href"] = str(path)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn-window")
    items = generate_scene(root / "catalog", size_km=SIZE_KM, n_s1=3, n_s2=6)
    by_coll = {}
    for it in items:
        by_coll.setdefault(it["collection"], []).append(it)
    s1, s2, dem = by_coll["sentinel-1-rtc"], by_coll["sentinel-2-l2a"], by_coll["cop-dem-glo-30"]
    # a second frame of the first S1 pass, seconds later (on top in the mosaic), with a
    # nodata hole (-32768) where the first frame shows through, and linear 0 (-> NaN) elsewhere
    frame = _with_nodata(s1[0], "vv", root / "vv_frame.tif", -32768.0, slice(10, 30), slice(5, 40))
    frame = _with_nodata(frame, "vh", root / "vh_frame.tif", -32768.0, slice(0, 128), slice(0, 64))
    frame["id"] += "_frame2"
    frame["properties"]["datetime"] = frame["properties"]["datetime"].replace(":00Z", ":20Z")
    with rasterio.open(frame["assets"]["vv"]["href"], "r+") as ds:
        a = ds.read(1)
        a[100:110, 100:110] = 0.0
        ds.write(a, 1)
    # S2 DN 0: the file's nodata in one item, untagged in another (no data by the DN > 0 rule)
    s2[1] = _with_nodata(s2[1], "B03", root / "b03.tif", 0, slice(40, 80), slice(60, 90))
    s2[2] = _with_nodata(
        s2[2], "B04", root / "b04.tif", 0, slice(70, 90), slice(0, 50), tagged=False
    )
    # scale and offset from raster:bands in one item (reflectance = DN * 1e-4 - 0.01)
    for b in CAT.opt_bands:
        s2[3]["assets"][b]["raster:bands"] = [{"scale": 1e-4, "offset": -0.01}]
    # the DEM's nodata (-32767) where the file does not say so: the profile's rule
    dem = [
        _with_nodata(
            dem[0], "data", root / "dem.tif", -32767.0, slice(0, 20), slice(0, 128), tagged=False
        )
    ]
    return inputs_from_items([*s1, frame], s2, dem)


GRID = scene_grid(SIZE_KM)


@pytest.mark.parametrize(
    "grid",
    [
        # aligned: a window of the asset grid with a halo past its top-left corner
        GRID.subgrid(-5, -7, 100, 90),
        # warped: another pixel size; another CRS (the next UTM zone)
        GridSpec.covering(32721, 20.0, GRID.window_bounds(0, 0, 128, 128)),
        grid_for_lonlat_bounds(lonlat_bounds(GRID.subgrid(8, 8, 100, 100)), 10.0, 32722),
    ],
    ids=["aligned", "20m", "utm22"],
)
def test_windowed_reader_gives_the_stackstac_cube(inputs, grid):
    read.close_all()
    fast = assemble(grid, inputs, catalog=CAT, spec=SPEC, log=None, reader="windows")
    ref = assemble(grid, inputs, catalog=CAT, spec=SPEC, log=None, reader="stackstac")
    bands = cube_bands(CAT, SPEC)
    assert fast.shape == ref.shape == (3, len(bands), *grid.shape)
    np.testing.assert_array_equal(fast, ref)  # NaN where NaN, every other bit equal

    # the comparison covers what it claims: dB, nodata, clouds, DEM and prior bands
    sar = fast[:, :2]
    assert np.nanmin(sar) < -5 and np.nanmax(sar) < 10  # dB, not linear power
    assert np.isnan(sar[0, 0]).any() and not np.isnan(sar[1]).all()  # linear 0 -> NaN
    clear = fast[:, bands.index("clear")]
    assert set(np.unique(clear)) == {0.0, 1.0}
    opt = fast[:, 2:6]
    assert -0.01 < np.nanmin(opt) and np.nanmax(opt) < 1.5  # reflectance, not DN
    dem = fast[:, bands.index("dem")]
    assert np.isfinite(dem).any() and np.nanmin(dem) > -1000 and np.isnan(dem).any()
    assert np.isfinite(fast[:, bands.index("prior_B02")]).any()
    if grid.res_m == GRID.res_m and grid.epsg == GRID.epsg:  # a halo outside the scene: no data
        assert np.isnan(fast[:, :2, :5]).all() and (fast[:, bands.index("clear"), :5] == 0).all()


def test_windowed_reads_are_not_the_stackstac_reads(inputs, monkeypatch):
    """Guards the comparison above: the windowed reader is the one under test (no dask)."""
    import dask

    def no_dask(*a, **k):
        raise AssertionError("the windowed reader ran dask")

    monkeypatch.setattr(dask, "compute", no_dask)
    grid = GRID.subgrid(0, 0, 32, 32)
    px = load_pixels(grid, inputs, catalog=CAT, spec=SPEC, reader="windows")
    assert px.sar.shape == (3, 2, 32, 32) and px.opt.shape == (6, 4, 32, 32)
    with pytest.raises(AssertionError, match="ran dask"):
        load_pixels(grid, inputs, catalog=CAT, spec=SPEC, reader="stackstac")
    with pytest.raises(ValueError, match="reader must be"):
        load_pixels(grid, inputs, catalog=CAT, spec=replace(SPEC), reader="gdal")
