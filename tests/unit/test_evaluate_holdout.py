"""Held-out patch scoring: additive sums equal the pooled metrics; one ridge for both uses."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.evaluate.baselines import fit_sar_ridge
from sar2opt.evaluate.holdout import format_scores, patch_sums, sums_to_scores
from sar2opt.evaluate.metrics import mae, psnr, rmse, ssim_map


def _patches(seed: int = 0, n: int = 6, p: int = 16):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.3, (n, 3, p, p)).astype(np.float32)
    pred = (truth + rng.normal(0, 0.02, truth.shape)).astype(np.float32)
    mask = np.ones((n, 1, p, p), np.float32)
    mask[0, 0, :8] = 0  # half a patch cloudy
    mask[2, 0, 3:6, 9:12] = 0  # a small cloud
    return pred, truth, mask


def test_sums_give_the_pooled_metrics_and_add_over_chunks() -> None:
    pred, truth, mask = _patches()
    s = patch_sums(pred, truth, mask)
    got = sums_to_scores(s)
    # the pooled metrics over all clear pixels of all patches, side by side on the x axis
    flat = [np.concatenate(list(a), axis=-1) for a in (pred, truth, mask[:, 0])]
    assert got["mae"] == pytest.approx(mae(*flat), rel=1e-12)
    assert got["rmse"] == pytest.approx(rmse(*flat), rel=1e-12)
    assert got["psnr_db"] == pytest.approx(psnr(*flat), rel=1e-12)
    maps = np.concatenate([ssim_map(pred[i], truth[i], mask[i, 0] > 0).ravel() for i in range(6)])
    assert np.isfinite(maps).sum() > 100
    assert got["ssim"] == pytest.approx(np.nanmean(maps), rel=1e-12)
    assert got["pixels"] == int(mask.sum())
    halves = [patch_sums(pred[a:b], truth[a:b], mask[a:b]) for a, b in ((0, 2), (2, 6))]
    for k, v in s.items():
        assert halves[0][k] + halves[1][k] == pytest.approx(v, rel=1e-12)
    assert sums_to_scores({**s, "sq_err": 0.0})["psnr_db"] == float("inf")


def test_the_sar_ridge_recovers_a_linear_map_from_patches() -> None:
    rng = np.random.default_rng(1)
    sar = rng.normal(-14, 3, (3, 2, 16, 16))
    truth = 0.1 + 0.01 * (sar[:, :1] + 14) + 0.003 * (sar[:, 1:] + 14) * np.ones((1, 3, 1, 1))
    mask = rng.random((3, 16, 16)) > 0.2
    model = fit_sar_ridge(sar, truth, mask)
    pred = model.predict(sar)
    assert pred.shape == truth.shape and pred.dtype == np.float32
    np.testing.assert_allclose(pred, truth, atol=2e-3)  # linear in the features (alpha 1)
    gap = sar.copy()
    gap[:, 0, 0, 0] = np.nan  # a SAR gap: no prediction there
    assert np.isnan(model.predict(gap)[:, :, 0, 0]).all()


def test_format_scores_lists_every_row() -> None:
    row = {"mae": 0.01, "rmse": 0.02, "psnr_db": 34.0, "ssim": 0.9, "pixels": 100}
    scores = {"split": "test", "n_patches": 3, "epoch": 2, "rows": {"model": row, "mean": row}}
    text = format_scores(scores)
    assert text.splitlines()[0] == "=== test split, 3 patches, best epoch 2, reflectance units"
    assert len(text.splitlines()) == 4 and "34.00" in text.splitlines()[2]
