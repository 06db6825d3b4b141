"""Summed-area window sums and dilation against direct numpy loops."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.ops import box_sum, dilate, summed_area, window_sum


def test_box_sum_small_case():
    x = np.arange(9.0).reshape(3, 3)
    # 2x2 windows: [0+1+3+4, 1+2+4+5], [3+4+6+7, 4+5+7+8]
    assert box_sum(x, 2).tolist() == [[8.0, 12.0], [20.0, 24.0]]


def test_box_sum_and_window_sum_equal_direct_sums_on_leading_axes():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (2, 7, 9))
    got = box_sum(x, 3, dtype="int64")
    assert got.shape == (2, 5, 7) and got.dtype == np.int64
    for t in range(2):
        for i in range(5):
            for j in range(7):
                assert got[t, i, j] == x[t, i : i + 3, j : j + 3].sum()
    sat = summed_area(x[0])
    r, c = np.array([0, 2, 4]), np.array([1, 0, 5])
    want = [x[0, a : a + 3, b : b + 4].sum() for a, b in zip(r, c, strict=True)]
    assert window_sum(sat, r, c, r + 3, c + 4).tolist() == want
    assert window_sum(sat, 1, 2, 6, 9) == x[0, 1:6, 2:9].sum()


def test_dilate_square():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    d = dilate(m, 1)
    assert d.sum() == 9 and d[1:4, 1:4].all()
    assert (dilate(m, 0) == m).all()


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilate_equals_shifted_ors_over_the_last_two_axes(radius):
    rng = np.random.default_rng(radius)
    m = rng.random((3, 11, 13)) > 0.93
    want = np.zeros_like(m)
    padded = np.pad(m, [(0, 0), (radius, radius), (radius, radius)])
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            want |= padded[:, dy : dy + 11, dx : dx + 13]
    got = dilate(m, radius)
    assert got.dtype == bool and (got == want).all()
