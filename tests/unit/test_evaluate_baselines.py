"""Baselines: local means, closed-form ridge and the mean colour, on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.evaluate.baselines import (
    constant_colour,
    fit_ridge,
    fit_sar_ridge,
    local_mean,
    sar_features,
)


def test_local_mean_cuts_window_at_edges_and_skips_nan():
    x = np.arange(9.0).reshape(3, 3)
    m = local_mean(x, 3)
    assert m[1, 1] == pytest.approx(4.0)
    assert m[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
    x[1, 1] = np.nan
    assert local_mean(x, 3)[0, 0] == pytest.approx((0 + 1 + 3) / 3)
    with pytest.raises(ValueError):
        local_mean(x, 4)


def test_sar_features_order():
    sar = np.stack([np.full((4, 4), -8.0), np.full((4, 4), -15.0)])
    f = sar_features(sar)
    assert f.shape == (6, 4, 4)
    assert f[:, 0, 0].tolist() == [-8.0, -15.0, 7.0, -8.0, -15.0, 7.0]


def test_ridge_recovers_exact_linear_map_with_tiny_alpha():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 200))
    y = np.stack([2 * x[0] - x[1] + 3, 0.5 * x[1]])
    model = fit_ridge(x, y, alpha=1e-9)
    np.testing.assert_allclose(model.predict(x), y, atol=1e-6)


def test_ridge_shrinkage_hand_computed():
    # one feature, n = 4: coef_z = Σz(y-ȳ)/(n + α); with α = n the fitted slope halves.
    x = np.array([[0.0, 1.0, 2.0, 3.0]])
    y = 2 * x
    pred = fit_ridge(x, y, alpha=4.0).predict(x)
    np.testing.assert_allclose(pred[0], 3.0 + (x[0] - 1.5))
    xn = x.copy()
    xn[0, 2] = np.nan
    assert np.isnan(fit_ridge(x, y, 4.0).predict(xn)[0, 2])


def test_constant_colour_and_ridge_baseline_on_a_scene():
    truth = np.stack([np.full((4, 4), 0.02), np.full((4, 4), 0.3)])
    truth[:, 0, 0] = [1.0, 1.0]
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert constant_colour(truth, mask).tolist() == pytest.approx([0.02, 0.3])
    with pytest.raises(ValueError):
        constant_colour(truth, np.zeros((4, 4), bool))

    # reflectance linear in VV: ridge fits it from the training half, predicts the other half
    rng = np.random.default_rng(0)
    vv = rng.uniform(-14, -6, (1, 16, 16))
    vh = rng.uniform(-20, -14, (1, 16, 16))
    sar = np.stack([vv, vh], axis=1)  # (T=1, 2, H, W)
    opt = (0.1 + 0.01 * vv)[:, None]  # (1, 1, H, W)
    train = np.zeros((1, 16, 16), bool)
    train[:, :, :8] = True
    pred = fit_sar_ridge(sar, opt, train, alpha=1e-9).predict(sar)
    np.testing.assert_allclose(pred[:, :, :, 8:], opt[:, :, :, 8:], atol=1e-5)
