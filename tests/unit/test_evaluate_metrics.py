"""SSIM, SAM, best-of-N and region metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.evaluate.metrics import (
    SSIM_K1,
    SSIM_K2,
    best_of_n,
    class_scores,
    constant_baseline,
    format_table,
    mae,
    psnr,
    region_scores,
    rmse,
    sam_deg,
    score_table,
    ssim,
    ssim_map,
)

C1, C2 = SSIM_K1**2, SSIM_K2**2


def test_ssim_constant_images_is_luminance_ratio():
    a, b = np.full((1, 7, 7), 0.2), np.full((1, 7, 7), 0.4)
    # variances 0: SSIM = (2ab + C1)/(a² + b² + C1) · C2/C2
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.4 + C1) / (0.04 + 0.16 + C1))
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_shifted_texture_only_loses_luminance():
    truth = (np.indices((7, 7)).sum(0) % 2 * 0.2)[None]  # checkerboard, 25 of 49 at 0
    m = truth.mean()
    assert m == pytest.approx(0.2 * 24 / 49)
    # same texture shifted by 0.1: variances/covariance equal, structure term 1
    expect = (2 * m * (m + 0.1) + C1) / (m**2 + (m + 0.1) ** 2 + C1)
    assert ssim(truth + 0.1, truth) == pytest.approx(expect)
    # inverted texture: covariance = -variance, structure term (C2 - 2v)/(2v + C2)
    v = truth.var(ddof=1)
    inv = (0.2 - truth) + (m - (0.2 - m))  # same mean, negated deviations
    assert ssim(inv, truth) == pytest.approx((C2 - 2 * v) / (2 * v + C2))


def test_ssim_windows_with_invalid_pixels_are_dropped():
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8))
    y = x.copy()
    y[:, 0, 0] = np.nan
    m = ssim_map(x, y)
    assert m.shape == (2, 2, 2)
    assert np.isnan(m[:, 0, 0]).all() and np.isfinite(m[:, 1:, :]).all()
    mask = np.ones((8, 8), bool)
    mask[7, 7] = False
    assert np.isnan(ssim_map(x, x, mask)[:, 1, 1]).all()
    assert ssim(x, y) == pytest.approx(1.0)  # the three valid windows are identical
    with pytest.raises(ValueError, match="window"):
        ssim(x[:, :5, :5], x[:, :5, :5])


def test_sam_angles():
    truth = np.array([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 2.0]]])  # (2 bands, 1, 3 px)
    pred = np.array([[[0.0, 1.0, 0.0]], [[1.0, 1.0, 6.0]]])
    # px0: (0,1) vs (1,0) -> 90°; px1: (1,1) vs (1,0) -> 45°; px2: (0,6) vs (0,2) -> 0°
    assert sam_deg(pred, truth) == pytest.approx((90 + 45 + 0) / 3)
    assert sam_deg(pred, truth, np.array([[False, True, True]])) == pytest.approx(22.5)
    with pytest.raises(ValueError, match="two bands"):
        sam_deg(pred[:1], truth[:1])


def test_best_of_n_multiearth_score():
    t = np.zeros((2, 1, 1, 2))
    t[1] += 1.0  # target 0 all zeros, target 1 all ones
    h = np.stack([np.full((1, 1, 2), v) for v in (0.1, 0.7, 0.95)])
    out = best_of_n(h, t)
    # target 0: MAEs 0.1, 0.7, 0.95 -> 0.1 (hyp 0); target 1: 0.9, 0.3, 0.05 -> 0.05 (hyp 2)
    assert out["per_target"] == pytest.approx([0.1, 0.05])
    assert out["best_index"] == [0, 2]
    assert out["score"] == pytest.approx(0.075) and out["min"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        best_of_n(h[0], t)


def test_region_and_class_scores():
    truth = np.zeros((1, 2, 2))
    pred = np.array([[[0.1, 0.3], [0.2, 0.4]]])
    labels = np.array([[0, 1], [0, 2]])
    rows = class_scores(pred, truth, labels, {0: "forest", 1: "pasture", 3: "water"})
    by = {r["region"]: r for r in rows}
    assert by["forest"]["mae"] == pytest.approx(0.15) and by["forest"]["pixels"] == 2
    assert by["forest"]["rmse"] == pytest.approx(np.sqrt((0.01 + 0.04) / 2))
    assert by["pasture"]["mae"] == pytest.approx(0.3)
    assert by["water"]["pixels"] == 0 and np.isnan(by["water"]["mae"])
    shadow = np.array([[True, True], [False, False]])
    r = region_scores(pred, truth, {"shadow": shadow}, mask=np.array([[False, True], [1, 1]]))
    assert r[0]["mae"] == pytest.approx(0.3) and r[0]["pixels"] == 1


def test_metrics_against_hand_computed_values():
    truth = np.zeros((2, 2, 2), "float32")
    pred = truth.copy()
    pred[0, 0, 0] = 0.4  # one error of 0.4 over 8 values
    assert mae(pred, truth) == pytest.approx(0.05)
    assert rmse(pred, truth) == pytest.approx(np.sqrt(0.16 / 8))
    assert psnr(pred, truth) == pytest.approx(10 * np.log10(1 / 0.02))  # 16.99 dB
    assert psnr(truth, truth) == float("inf")


def test_mask_and_nan_are_excluded():
    truth = np.zeros((1, 2, 2), "float32")
    pred = np.array([[[0.1, 9.0], [np.nan, 0.1]]], "float32")
    mask = np.array([[True, False], [True, True]])
    assert mae(pred, truth, mask) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no valid"):
        mae(pred, truth, np.zeros((2, 2), bool))


def test_constant_baseline_and_table():
    truth = np.stack([np.full((4, 4), 0.02), np.full((4, 4), 0.3)]).astype("float32")
    base = constant_baseline([0.03, 0.28], truth)
    assert base.shape == truth.shape and mae(base, truth) == pytest.approx(0.015)
    rows = score_table({"model": truth, "mean colour": base}, truth)
    assert rows[0]["psnr_db"] == float("inf") and rows[1]["pixels"] == 16
    assert "mean colour" in format_table(rows)


# --- masked gaussian SSIM (the evaluate protocol's) --------------------------------------


def test_masked_ssim_identical_is_one_and_constants_give_the_luminance_term():
    from sar2opt.evaluate.metrics import masked_ssim

    rng = np.random.default_rng(1)
    a = rng.uniform(0.0, 0.4, (3, 24, 24))
    assert masked_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    mask = np.zeros((24, 24), bool)
    mask[5:9, 3:20] = True
    assert masked_ssim(a, a, mask) == pytest.approx(1.0, abs=1e-12)
    c1 = (0.01 * 1.0) ** 2
    x, y = np.full((1, 16, 16), 0.2), np.full((1, 16, 16), 0.4)
    assert masked_ssim(x, y) == pytest.approx((2 * 0.2 * 0.4 + c1) / (0.04 + 0.16 + c1))


def test_masked_ssim_matches_the_textbook_gaussian_ssim_away_from_the_border():
    """Wang et al.'s SSIM with a gaussian window (sigma 1.5 px, radius 5: scipy's
    gaussian_filter, truncate 3.5, as scikit-image uses it), population covariances: with
    every pixel scored, the same values where the window lies inside the image."""
    from scipy.ndimage import gaussian_filter

    from sar2opt.evaluate.metrics import masked_ssim_map

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.0, 0.3, (2, 40, 50))
    pred = truth + rng.normal(0, 0.05, truth.shape)
    ours = masked_ssim_map(pred, truth)
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    for b in range(2):
        x, y = truth[b], pred[b]
        g = lambda a: gaussian_filter(a, sigma=1.5, truncate=3.5)  # noqa: E731
        mx, my = g(x), g(y)
        vx, vy, cxy = g(x * x) - mx**2, g(y * y) - my**2, g(x * y) - mx * my
        ref = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        assert np.abs(ours[b, 5:-5, 5:-5] - ref[5:-5, 5:-5]).max() < 1e-12


def test_masked_ssim_never_sees_unscored_pixels():
    """A hole's SSIM does not change with what the prediction holds around it (a cloud-removal
    model copies the clear pixels there), and is NaN outside the hole."""
    from sar2opt.evaluate.metrics import masked_ssim_map

    rng = np.random.default_rng(2)
    truth = rng.uniform(0.0, 0.3, (2, 32, 32))
    pred = truth + rng.normal(0, 0.03, truth.shape)
    hole = np.zeros((32, 32), bool)
    hole[10:20, 8:24] = True
    copied = np.where(hole, pred, truth)  # exact outside the hole
    noisy = np.where(hole, pred, 0.5)  # garbage outside the hole
    a, b = masked_ssim_map(copied, truth, hole), masked_ssim_map(noisy, truth, hole)
    assert np.isfinite(a[:, hole]).all() and np.isnan(a[:, ~hole]).all()
    assert np.array_equal(a, b, equal_nan=True)
    assert np.nanmean(a) < 0.99


def test_masked_ssim_at_one_pixel_from_its_definition():
    """Wang et al.'s formula with the 11 x 11 gaussian weights written out at one pixel."""
    from sar2opt.evaluate.metrics import gaussian_kernel, masked_ssim_map

    rng = np.random.default_rng(3)
    t = rng.uniform(0.0, 0.3, (1, 30, 30))
    p = 0.8 * t + 0.05 + rng.normal(0, 0.02, t.shape)
    k = gaussian_kernel()
    assert k.size == 11 and k.sum() == pytest.approx(1.0)
    w = np.outer(k, k)
    win = (0, slice(10, 21), slice(8, 19))  # centred on (15, 13)
    a, b = p[win], t[win]
    ma, mb = (w * a).sum(), (w * b).sum()
    va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
    cab = (w * a * b).sum() - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    want = (2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert masked_ssim_map(p, t)[0, 15, 13] == pytest.approx(want, rel=1e-10)
