"""S2 pixel test (cloud, shadow, no-data) and dilation, on known pixels and real clouds."""

import warnings

import numpy as np
import pytest

from sar2opt.config import CubeSpec
from sar2opt.cube.clean import cloud_shadow_mask, dilate
from tests.helpers.data import MULTIEARTH, requires_shared_data

SPEC = CubeSpec()
KW = dict(
    cloud_brightness=SPEC.cloud_brightness,
    cloud_whiteness=SPEC.cloud_whiteness,
    shadow_brightness=SPEC.shadow_brightness,
)
BANDS = ("B02", "B03", "B04")


def test_cloud_test_separates_white_cloud_from_bright_soil_and_forest():
    forest = [0.02, 0.04, 0.025]
    soil = [0.09, 0.12, 0.16]  # bright but red: not a cloud
    cloud = [0.35, 0.36, 0.37]
    shadow = [0.006, 0.01, 0.007]
    opt = np.array([forest, soil, cloud, shadow], dtype="float32").T[:, None, :]  # (band, 1, 4)
    m = cloud_shadow_mask(opt, BANDS, **KW)
    assert m.tolist() == [[False, False, True, True]]


def test_a_cloud_probability_band_is_the_cloud_test_so_snow_stays_clear():
    """BioMassters' CLP: snow (bright, white, CLP 0) is clear; a haze over forest with CLP
    80 is cloud; the shadow test stays; without CLP the pixel test flags the snow."""
    snow, haze, forest = [0.6, 0.62, 0.63], [0.05, 0.06, 0.055], [0.02, 0.04, 0.025]
    shadow = [0.006, 0.01, 0.007]
    opt = np.array([snow, haze, forest, shadow], dtype="float32").T[:, None, :]
    clp = np.array([0.0, 80.0, 10.0, 0.0], dtype="float32")[None, None, :]
    m = cloud_shadow_mask(np.concatenate([opt, clp]), (*BANDS, "CLP"), **KW)
    assert m.tolist() == [[False, True, False, True]]
    assert cloud_shadow_mask(opt, BANDS, **KW).tolist() == [[True, False, False, True]]


def test_a_cloud_probability_given_apart_is_the_test_where_known():
    """``clp`` beside the reflectance (the cube's loaders read the CLP asset apart): the
    same rule as a CLP band; where it is NaN (nodata, an item without CLP) the pixel test;
    exactly 50 % is not cloud (``clp_cloud``, also the ingest's eo:cloud_cover)."""
    snow, haze, forest = [0.6, 0.62, 0.63], [0.05, 0.06, 0.055], [0.02, 0.04, 0.025]
    opt = np.array([snow, haze, forest, snow, haze], dtype="float32").T[:, None, :]
    clp = np.array([[[0.0, 80.0, 50.0, np.nan, np.nan]]], dtype="float32")
    m = cloud_shadow_mask(opt, BANDS, **KW, clp=clp[0])
    assert m.tolist() == [[False, True, False, True, False]]
    with_band = cloud_shadow_mask(np.concatenate([opt, clp]), (*BANDS, "CLP"), **KW)
    assert with_band.tolist() == m.tolist()
    # no probability anywhere: exactly the pixel test
    none = np.full(clp.shape[1:], np.nan, "float32")
    no_clp = cloud_shadow_mask(opt, BANDS, **KW)
    assert cloud_shadow_mask(opt, BANDS, **KW, clp=none).tolist() == no_clp.tolist()
    assert no_clp.tolist() == [[True, False, False, True, False]]
    # one probability plane per image of a stack (item, band, y, x)
    stack = np.stack([opt, opt])
    planes = np.stack([clp[0], np.full_like(clp[0], np.nan)])
    got = cloud_shadow_mask(stack, BANDS, **KW, clp=planes, dilate_px=0)
    assert got[:, 0].tolist() == [m[0].tolist(), no_clp[0].tolist()]


def test_nodata_is_flagged_and_dilation_grows_by_radius():
    opt = np.full((3, 9, 9), 0.03, dtype="float32")
    opt[:, 4, 4] = np.nan
    m = cloud_shadow_mask(opt, BANDS, **KW, dilate_px=0)
    assert m.sum() == 1 and m[4, 4]
    d = dilate(m, 2)
    assert d.sum() == 25 and d[2:7, 2:7].all()


def _read_s2(stem):
    import rasterio

    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    bands = []
    for b in (2, 3, 4):
        with rasterio.open(MULTIEARTH / "sent2" / f"Sentinel2_B{b}_{stem}.tiff") as r:
            bands.append(r.read(1).astype("float32") / 1e4)
    with rasterio.open(MULTIEARTH / "sent2" / f"Sentinel2_QA60_{stem}.tiff") as r:
        qa = r.read(1)
    return np.stack(bands), qa


@requires_shared_data
def test_pixel_test_finds_real_clouds_that_qa60_misses():
    cloudy, qa = _read_s2("-55.20_-4.39_2019_06_06")
    clear, _ = _read_s2("-55.20_-4.39_2019_07_26")
    assert qa.max() == 0  # the trap: QA60 says "no cloud"
    m_cloudy = cloud_shadow_mask(cloudy, BANDS, **KW, dilate_px=SPEC.cloud_dilate_px)
    m_clear = cloud_shadow_mask(clear, BANDS, **KW, dilate_px=SPEC.cloud_dilate_px)
    assert m_cloudy.mean() > 0.15
    assert m_clear.mean() < 0.03
    # every really bright white pixel of the cloudy scene is flagged
    white = (cloudy.mean(0) > 0.25) & (cloudy.min(0) / cloudy.max(0) > 0.85)
    assert white.sum() > 1000 and m_cloudy[white].all()


@pytest.mark.parametrize("radius", [1, 3])
def test_dilate_on_edges(radius):
    m = np.zeros((6, 6), bool)
    m[0, 0] = True
    d = dilate(m, radius)
    assert d.sum() == (radius + 1) ** 2
