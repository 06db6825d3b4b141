"""Named Sentinel-2 cleaning steps (SCL, QA60, ratios, V-S heuristic, Clean Collector)."""

import numpy as np
import pytest

from sar2opt.cube import clean
from tests.helpers.data import MULTIEARTH, requires_shared_data

FOREST = [0.02, 0.04, 0.025]
SOIL = [0.09, 0.12, 0.16]
CLOUD = [0.35, 0.36, 0.37]


def _img(*pixels):
    return np.array(pixels, dtype="float64").T[:, None, :]  # (band, 1, n)


def test_scl_mask_flags_cloud_shadow_cirrus_and_nodata_only():
    scl = np.arange(12).reshape(3, 4)
    m = clean.scl_mask(scl)
    assert np.flatnonzero(m).tolist() == [0, 1, 3, 8, 9, 10]
    assert clean.scl_mask(scl, invalid=(9,)).sum() == 1


def test_qa60_bits():
    qa = np.array([0, 1 << 10, 1 << 11, (1 << 10) | (1 << 11), 1 << 9, 1024 + 2], dtype=np.uint16)
    assert clean.qa60_mask(qa).tolist() == [False, True, True, True, False, True]


def test_ratios_and_keep_only_ratio_zero():
    opt = np.full((3, 3, 2, 2), 0.05)
    opt[1, :, 0, 0] = np.nan
    opt[2, :, 1, :] = 0.0  # all bands zero = no data
    assert clean.nodata_ratio(opt).tolist() == [0.0, 0.25, 0.5]
    cloud = np.zeros((3, 2, 2), bool)
    cloud[0, 0, 1] = True
    assert clean.cloud_ratio(cloud).tolist() == [0.25, 0.0, 0.0]
    keep = clean.keep_ratio_zero(clean.nodata_ratio(opt), clean.cloud_ratio(cloud))
    assert keep.tolist() == [False, False, False]
    assert clean.keep_ratio_zero([0, 0.1], [0, 0]).tolist() == [True, False]


def test_brightness_minus_saturation_separates_white_from_coloured():
    score = clean.brightness_minus_saturation(_img(FOREST, SOIL, CLOUD))[0]
    # forest: V=0.04/0.3, S=0.5; soil V=0.16/0.3, S=0.4375; cloud V=1 (clipped), S=2/37
    np.testing.assert_allclose(score, [0.04 / 0.3 - 0.5, 0.16 / 0.3 - 0.4375, 1 - 0.02 / 0.37])
    assert clean.bms_cloud_mask(_img(FOREST, SOIL, CLOUD))[0].tolist() == [False, False, True]


def test_clean_collector_stages():
    h = w = 20
    clear_dn = np.broadcast_to(np.array(SOIL)[:, None, None] * 1e4, (3, h, w)).copy()
    qa = np.zeros((h, w), np.uint16)
    assert clean.clean_collector(clear_dn, qa) == (True, "kept")
    cloudy = clear_dn.copy()
    cloudy[:, 0, 0] = 5000  # one pixel above 4096 DN: ratio > 0
    assert clean.clean_collector(cloudy, qa) == (False, "clouds")
    qa_cloud = qa.copy()
    qa_cloud[3, 3] = 1 << 10
    assert clean.clean_collector(clear_dn, qa_cloud) == (False, "clouds")
    night = clear_dn * 0.1  # V = 160 DN -> 14/255
    assert clean.clean_collector(night, None) == (False, "night")
    dark = clear_dn.copy()
    dark[:, :3, :] = 50  # 15 % of pixels below 10/255
    assert clean.clean_collector(dark, None) == (False, "dark")
    dark[:, 2, :] = clear_dn[:, 2, :]  # 10 %: still kept
    assert clean.clean_collector(dark, None)[0]


def test_exemplar_stage_and_beta_range():
    white = clean.to_uint8(np.full((3, 8, 8), 3000.0))
    green = clean.to_uint8(np.broadcast_to(np.array([200.0, 400, 250])[:, None, None], (3, 8, 8)))
    ex = np.stack([clean.image_features(white)])
    assert clean.exemplar_distance(clean.image_features(white), ex) == 0.0
    d = clean.exemplar_distance(clean.image_features(green), ex)
    assert d == pytest.approx(2.0)  # disjoint one-bin histograms: sqrt(1 + 1 + 1 + 1)
    assert not clean.cc_stage_exemplars(clean.image_features(white), ex, beta=0.3)
    assert clean.cc_stage_exemplars(clean.image_features(green), ex, beta=0.3)
    with pytest.raises(ValueError, match="outside"):
        clean.cc_stage_exemplars(clean.image_features(green), ex, beta=3.0)


@requires_shared_data
def test_qa60_misses_real_clouds_that_brightness_minus_saturation_finds():
    import warnings

    import rasterio

    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    stem = "-55.20_-4.39_2019_06_06"
    bands = []
    for b in (2, 3, 4):
        with rasterio.open(MULTIEARTH / "sent2" / f"Sentinel2_B{b}_{stem}.tiff") as r:
            bands.append(r.read(1).astype("float64") / 1e4)
    with rasterio.open(MULTIEARTH / "sent2" / f"Sentinel2_QA60_{stem}.tiff") as r:
        qa = r.read(1)
    rgb = np.stack(bands)
    assert clean.qa60_mask(qa).sum() == 0
    m = clean.bms_cloud_mask(rgb)
    white = (rgb.mean(0) > 0.25) & (rgb.min(0) / rgb.max(0) > 0.85)
    assert white.sum() > 1000 and m[white].all() and m.mean() > 0.1
    assert not clean.clean_collector(rgb * 1e4, qa)[0]
