"""S1 speckle filters and scaling steps, on numbers whose answers are known."""

import numpy as np
import pytest

from sar2opt.cube import clean_s1


def _edge_scene(seed=0, enl=4.4):
    rng = np.random.default_rng(seed)
    truth = np.full((48, 48), 0.02)
    truth[:, 24:] = 0.2  # a 10 dB step (forest edge / field)
    return truth, truth * rng.gamma(enl, 1.0 / enl, truth.shape)


def test_median_filter_removes_an_impulse():
    img = np.ones((7, 7), "float32")
    img[3, 3] = 100.0
    out = clean_s1.median_filter(img, 3)
    assert out[3, 3] == 1.0 and out.shape == img.shape
    with pytest.raises(ValueError, match="odd"):
        clean_s1.median_filter(img, 4)


def test_lee_filters_reduce_speckle_and_refined_lee_keeps_the_edge():
    truth, speckled = _edge_scene()
    lee = clean_s1.lee_filter(speckled)
    rlee = clean_s1.refined_lee_filter(speckled)
    flat = np.s_[:, 4:18]
    cv = lambda a: a[flat].std() / a[flat].mean()  # noqa: E731
    assert cv(speckled) > 0.4  # 1/sqrt(4.4) = 0.48
    assert cv(lee) < 0.5 * cv(speckled) and cv(rlee) < 0.5 * cv(speckled)
    # the two columns next to the step: refined Lee leaks less across it than Lee
    near = np.s_[4:-4, 21:24]
    err = lambda a: np.abs(10 * np.log10(a[near] / truth[near])).mean()  # noqa: E731
    assert err(rlee) < err(lee)


def test_lee_on_a_constant_image_is_the_identity_and_nan_stays():
    img = np.full((9, 9), 0.1)
    img[0, 0] = np.nan
    out = clean_s1.lee_filter(img, 3)
    assert np.isnan(out[0, 0]) and np.allclose(out[1:, 1:], 0.1)
    np.testing.assert_allclose(clean_s1.refined_lee_filter(np.full((9, 9), 0.1)), 0.1, rtol=1e-6)


def test_percentile_clip_tanh_and_ratio():
    x = np.arange(101, dtype="float64")
    clipped, lo, hi = clean_s1.percentile_clip(x, 2, 98)
    assert (lo, hi) == (2.0, 98.0) and clipped.min() == 2 and clipped.max() == 98
    t = clean_s1.tanh_squash(np.array([-15.0, -5.0, -25.0]), -15.0, 10.0)
    np.testing.assert_allclose(t, [0.0, np.tanh(1), -np.tanh(1)], rtol=1e-6)
    vv, vh = np.array([[-8.0]]), np.array([[-14.5]])
    assert clean_s1.vv_vh_ratio_db(vv, vh)[0, 0] == pytest.approx(6.5)
    ch = clean_s1.sar_channels(vv, vh, ratio=True)
    assert ch.shape == (3, 1, 1) and ch[2, 0, 0] == pytest.approx(6.5)
    assert clean_s1.sar_channels(vv, vh).shape == (2, 1, 1)
