"""The seam figure: how much a mosaic jumps across its block edges, against inside blocks.

Inference writes each block as the centre crop of a larger window (``infer.run``): no blending
over the overlap. That is only sound if a block edge is no more visible than any other pair
of neighbouring pixels, since the net is not shift invariant and two windows see different
context. :func:`edge_jumps` measures it on a written mosaic: the band-mean absolute
difference between neighbouring pixels, split into pairs that straddle a block edge and
pairs inside a block; ``benchmarks/seam_figure.py`` prints it for a store.
"""

from __future__ import annotations

import numpy as np


def edge_jumps(image: np.ndarray, ok: np.ndarray, block_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Jumps (band-mean |difference| of neighbouring pixels) of ``image`` (band, y, x) across
    block edges and inside blocks: two 1-D arrays. Blocks start at pixel 0 every
    ``block_px``; a pair counts when both pixels are ``ok`` (y, x) and finite."""
    if block_px < 2:
        raise ValueError(f"block_px must be >= 2, got {block_px}")
    good = ok & np.isfinite(image).all(axis=0)
    edge, inside = [], []
    for axis in (1, 2):  # rows (pairs one above the other), then columns
        n = image.shape[axis]
        a = np.take(image, range(n - 1), axis=axis)
        b = np.take(image, range(1, n), axis=axis)
        jump = np.abs(b - a).mean(axis=0)
        both = np.take(good, range(n - 1), axis=axis - 1)
        both &= np.take(good, range(1, n), axis=axis - 1)
        at_edge = (np.arange(1, n) % block_px) == 0  # the pair (j, j+1) with j+1 on an edge
        shape = [1, 1]
        shape[axis - 1] = n - 1
        at_edge = np.broadcast_to(at_edge.reshape(shape), both.shape)
        edge.append(jump[both & at_edge])
        inside.append(jump[both & ~at_edge])
    return np.concatenate(edge), np.concatenate(inside)


def jump_stats(jumps: np.ndarray) -> dict[str, float]:
    """Mean and 99th percentile of ``jumps``, and their count (NaN stats when empty)."""
    if jumps.size == 0:
        return {"mean": float("nan"), "p99": float("nan"), "n": 0}
    return {
        "mean": float(jumps.mean()),
        "p99": float(np.percentile(jumps, 99)),
        "n": int(jumps.size),
    }
