"""The seam figure on tiny generated rasters: a tiling that steps at block edges is caught,
a smooth image is not, and only the pairs the mask keeps count."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sar2opt.evaluate.seams import edge_jumps, jump_stats

B = 32  # block side


def _smooth(seed: int = 0, size: int = 96) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(3, size, size))
    return np.stack([gaussian_filter(b, 2.0) for b in noise]).astype(np.float32)


def test_a_smooth_image_jumps_alike_on_and_off_block_edges() -> None:
    img = _smooth()
    edge, inside = edge_jumps(img, np.ones(img.shape[1:], bool), B)
    # 96 px: 2 inner edges a direction, 96 pairs each; the rest are inside
    assert edge.size == 2 * 2 * 96 and inside.size == 2 * 95 * 96 - edge.size
    ratio = jump_stats(edge)["mean"] / jump_stats(inside)["mean"]
    assert 0.8 < ratio < 1.25, ratio


def test_a_step_at_every_block_edge_is_caught() -> None:
    img = _smooth()
    inside_mean = jump_stats(edge_jumps(img, np.ones(img.shape[1:], bool), B)[1])["mean"]
    offsets = 2 * inside_mean * (np.indices((3, 3)).sum(0) % 2 * 2 - 1)  # a checkerboard
    stepped = img + np.kron(offsets, np.ones((B, B)))[None].astype(np.float32)
    edge, inside = edge_jumps(stepped, np.ones(img.shape[1:], bool), B)
    np.testing.assert_allclose(inside.mean(), inside_mean, rtol=1e-5)  # inside untouched
    assert jump_stats(edge)["mean"] > 3 * inside_mean
    # shifting the lattice by half a block hides the steps among the inside pairs
    off_edge, _ = edge_jumps(stepped[:, B // 2 :, B // 2 :], np.ones((80, 80), bool), B)
    assert jump_stats(off_edge)["mean"] < 1.3 * inside_mean


def test_only_pairs_of_kept_finite_pixels_count() -> None:
    img = _smooth()
    ok = np.ones(img.shape[1:], bool)
    ok[:, 40:] = False  # only columns 0-39 count
    img[0, 10, 5] = np.nan
    edge, inside = edge_jumps(img, ok, B)
    # rows: 95 pairs x 40 columns, 2 edges x 40 of them; columns: 96 rows x 39 pairs, one
    # edge column; the NaN pixel (away from the edges) loses its 4 inside pairs
    assert edge.size == 2 * 40 + 96 and inside.size == 95 * 40 - 80 + 96 * 38 - 4
    assert np.isfinite(edge).all() and np.isfinite(inside).all()
    assert jump_stats(np.array([]))["n"] == 0
    with pytest.raises(ValueError, match="block_px"):
        edge_jumps(img, ok, 1)
