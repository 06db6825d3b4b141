"""Cleaning: per-pixel cloud and shadow flags for Sentinel-2.

QA60 cannot be trusted (it is all zeros on the real MultiEarth images with obvious clouds),
so the flag is a pixel test: clouds are bright AND white across the visible bands, shadows
are very dark. Thresholds come from ``CubeSpec`` and were checked on the real sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VISIBLE = ("B02", "B03", "B04")


def cloud_shadow_mask(
    opt: np.ndarray,
    bands: Sequence[str],
    *,
    cloud_brightness: float,
    cloud_whiteness: float,
    shadow_brightness: float,
    dilate_px: int = 0,
) -> np.ndarray:
    """Boolean (..., y, x): True where a pixel is cloud, cloud shadow or has no data.

    ``opt`` is reflectance (..., band, y, x). Brightness is the mean of B02/B03/B04;
    whiteness is min/max over them (1 = grey/white, soil and vegetation are coloured).
    """
    idx = [list(bands).index(b) for b in VISIBLE if b in bands]
    if len(idx) < 2:
        raise ValueError(f"cloud test needs at least two of {VISIBLE}, got {list(bands)}")
    vis = np.take(opt, idx, axis=-3)
    nodata = np.isnan(opt).any(axis=-3)
    vis = np.where(np.isnan(vis), 0.0, vis)
    brightness = vis.mean(axis=-3)
    whiteness = vis.min(axis=-3) / np.maximum(vis.max(axis=-3), 1e-6)
    cloud = (brightness > cloud_brightness) & (whiteness > cloud_whiteness)
    shadow = brightness < shadow_brightness
    flagged = cloud | shadow
    if dilate_px > 0:
        flagged = dilate(flagged, dilate_px)
    return flagged | nodata


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary dilation over the last two axes with a (2r+1)² square (numpy only)."""
    out = mask.copy()
    h, w = mask.shape[-2:]
    r = radius_px
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(r, r), (r, r)])
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
    return out
