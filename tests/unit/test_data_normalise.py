"""Per-band statistics, masking and the normalise/denormalise round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.data.normalise import band_stats, denormalise, normalise


def test_band_stats_per_band() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(3.0, 2.0, (50, 16, 16)), rng.normal(-1.0, 0.5, (50, 16, 16))], 1)
    mean, std = band_stats(x.astype(np.float32))
    np.testing.assert_allclose(mean, [3.0, -1.0], atol=0.05)
    np.testing.assert_allclose(std, [2.0, 0.5], rtol=0.03)
    assert mean.dtype == np.float32 and mean.shape == (2,)


def test_band_stats_ignores_masked_pixels() -> None:
    x = np.zeros((2, 1, 4, 4), np.float32)
    x[:, :, :2] = 1.0
    x[:, :, 2:] = 100.0  # "cloud"
    mask = np.zeros((2, 1, 4, 4), np.float32)
    mask[:, :, :2] = 1.0
    mean, std = band_stats(x, mask)
    assert mean[0] == pytest.approx(1.0) and std[0] == pytest.approx(1e-6)  # floored, not 0


def test_round_trip_numpy_and_torch() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.2, 0.1, (3, 4, 8, 8)).astype(np.float32)
    mean, std = band_stats(x)
    y = normalise(x, mean, std)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    np.testing.assert_allclose(denormalise(y, mean, std), x, atol=1e-6)
    t = torch.from_numpy(x[0])  # (C, H, W) tensor, stats as plain lists (from a checkpoint)
    yt = normalise(t, mean.tolist(), std.tolist())
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), y[0], atol=1e-6)
    np.testing.assert_allclose(denormalise(yt, mean, std).numpy(), x[0], atol=1e-6)


def test_empty_mask_raises() -> None:
    with pytest.raises(ValueError, match="no valid pixels"):
        band_stats(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)))
