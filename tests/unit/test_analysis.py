"""sar2opt.analysis on a small mosaic written with the real mosaic writer."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread
from pyproj import Transformer
from shapely.geometry import box

from sar2opt import analysis as an
from sar2opt.grid import GridSpec
from tests.helpers.infer_fakes import write_mosaic

GRID = GridSpec(32721, 10.0, (698700.0, 9514000.0, 698780.0, 9514060.0))  # 8 x 6 px
BANDS = ["B02", "B03", "B04", "B08", "uncertainty"]
TIMES = ["2023-07-01T10:00:00Z", "2023-08-01T10:00:00Z"]


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    data = np.zeros((2, 5, GRID.height, GRID.width), "float32")
    data[:, 0], data[:, 1], data[:, 2], data[:, 3] = 0.02, 0.05, 0.03, 0.30  # forest
    data[1, 2, :, :4] = 0.10  # western half cleared at t1: red up
    data[1, 3, :, :4] = 0.20  # and NIR down
    data[:, 4] = 0.01
    data[:, 4, 0, 0] = 0.5  # one unsure pixel
    path = write_mosaic(tmp_path_factory.mktemp("m") / "mosaic.zarr", data, GRID, TIMES, BANDS)
    return xr.open_zarr(path)


def test_indices_hand_computed(mosaic):
    opt = an.optical(mosaic)
    assert [str(b) for b in opt.band.values] == BANDS[:4]
    ndvi = an.spectral_index(opt, "ndvi")
    assert ndvi.dims == ("time", "y", "x")
    assert float(ndvi[0, 0, 0]) == pytest.approx((0.30 - 0.03) / 0.33, rel=1e-5)
    assert float(ndvi[1, 0, 0]) == pytest.approx(0.10 / 0.30, rel=1e-5)
    gli = an.spectral_index(opt, "gli")  # (2G - R - B) / (2G + R + B)
    assert float(gli[0, 3, 7]) == pytest.approx(0.05 / 0.15, rel=1e-5)
    with pytest.raises(an.AnalysisError, match="unknown index"):
        an.spectral_index(opt, "xyz")
    with pytest.raises(an.AnalysisError, match="B08"):
        an.spectral_index(opt.sel(band=["B02", "B03", "B04"]), "ndvi")


def test_masked_by_uncertainty(mosaic):
    m = an.masked(mosaic, max_uncertainty=0.1)
    assert np.isnan(m[:, :, 0, 0]).all() and int(np.isnan(m).sum()) == 2 * 4
    with pytest.raises(an.AnalysisError, match="source"):
        an.masked(mosaic, sources=[1])


def test_point_polygon_change(mosaic):
    ndvi = an.spectral_index(an.optical(mosaic), "ndvi")
    s = an.at_point(ndvi, x=698705.0, y=9514055.0)  # pixel (0, 0)
    assert s.dims == ("time",) and float(s[1]) == pytest.approx(1 / 3, rel=1e-5)
    lon, lat = Transformer.from_crs(32721, 4326, always_xy=True).transform(698775.0, 9514005.0)
    e = an.at_point(ndvi, lon=lon, lat=lat)  # pixel (5, 7), never cleared
    assert float(e[1]) == pytest.approx(0.27 / 0.33, rel=1e-5)
    with pytest.raises(an.AnalysisError, match="outside"):
        an.at_point(ndvi, x=0.0, y=0.0)
    # polygon over columns 2..5 (x centres 698725..698755): half cleared, half forest
    poly = box(698720.0, 9514000.0, 698760.0, 9514060.0)
    mean = an.in_polygon(ndvi, poly, crs="EPSG:32721")
    assert float(mean[1]) == pytest.approx((1 / 3 + 0.27 / 0.33) / 2, rel=1e-5)
    lost = an.drop_mask(ndvi, "2023-07-01", "2023-08-03", 0.3)
    assert lost.dims == ("y", "x") and bool(lost[:, :4].all()) and not bool(lost[:, 4:].any())
    with pytest.raises(an.AnalysisError, match="no pixel"):
        an.in_polygon(ndvi, box(0, 0, 1, 1), crs="EPSG:32721")


def test_quicklook_png(mosaic, tmp_path):
    p = an.quicklook(an.optical(mosaic).isel(time=1), tmp_path / "rgb.png")
    img = imread(p)
    assert img.shape[2] == 4 and img.shape[0] > 100
    ndvi = an.spectral_index(an.optical(mosaic), "ndvi")
    assert imread(an.quicklook(ndvi.isel(time=1), tmp_path / "ndvi.png")).shape[0] > 100
    with pytest.raises(an.AnalysisError, match="slice"):
        an.quicklook(ndvi, tmp_path / "bad.png")
