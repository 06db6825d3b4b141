"""Window sums over the last two axes, pure numpy: summed-area tables, box sums, dilation.

One implementation for every neighbourhood count in the code base (patch validity in the
index, SSIM and local-mean windows, the cube's cloud dilation, the evaluation's buffer
rings): a summed-area table answers any rectangle's sum in O(1), whatever its size, with
no SciPy.
"""

from __future__ import annotations

import numpy as np


def summed_area(x: np.ndarray) -> np.ndarray:
    """Table ``s`` (..., H + 1, W + 1) with ``s[..., i, j]`` = sum of ``x[..., :i, :j]``.

    Keeps the dtype numpy's cumsum gives (pass int64 counts for exact integer sums).
    """
    s = np.asarray(x).cumsum(-2).cumsum(-1)
    return np.pad(s, [(0, 0)] * (s.ndim - 2) + [(1, 0), (1, 0)])


Index = int | np.ndarray


def window_sum(sat: np.ndarray, r0: Index, c0: Index, r1: Index, c1: Index) -> np.ndarray:
    """Sum of ``x[..., r0:r1, c0:c1]`` from its :func:`summed_area` table ``sat``; the bounds
    are ints or index arrays of one shape (one sum per element)."""
    return sat[..., r1, c1] - sat[..., r0, c1] - sat[..., r1, c0] + sat[..., r0, c0]


def box_sum(x: np.ndarray, win_px: int, dtype: str = "float64") -> np.ndarray:
    """Sum of every ``win_px`` x ``win_px`` window over the last two axes ('valid' positions:
    (..., H - win + 1, W - win + 1)), computed in ``dtype``."""
    s = summed_area(np.asarray(x, dtype=dtype))
    w = win_px
    return s[..., w:, w:] - s[..., :-w, w:] - s[..., w:, :-w] + s[..., :-w, :-w]


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Square (Chebyshev) binary dilation over the last two axes by ``radius_px`` pixels.

    Pixels beyond the edge count as False; ``radius_px`` <= 0 returns a copy. Separable: a
    run of ``2 * radius_px + 1`` ORed along each axis in turn, in boolean ops (a summed-area
    table in int64 cost ~10x more on a strip's cloud mask, for the same pixels).
    """
    m = np.asarray(mask, dtype=bool)
    r = int(radius_px)
    if r <= 0:
        return m.copy()
    padded = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(r, r), (r, r)])
    rows = _or_runs(padded, 2 * r + 1)  # along x: (..., H + 2r, W)
    return np.ascontiguousarray(_or_runs(rows.swapaxes(-1, -2), 2 * r + 1).swapaxes(-1, -2))


def _or_runs(a: np.ndarray, n: int) -> np.ndarray:
    """OR of every run of ``n`` neighbours along the last axis ('valid': length - n + 1), in
    log2(n) steps: runs of 1, 2, 4, ... p <= n, then two runs of p that overlap to cover n."""
    p = 1
    while 2 * p <= n:
        a = a[..., :-p] | a[..., p:]  # runs of 2p
        p *= 2
    if p < n:
        a = a[..., : a.shape[-1] - (n - p)] | a[..., n - p :]
    return a
