"""Sentinel-1 cleaning as the seeds did it: dB, speckle filters, clipping, squashing, ratio.

Speckle filters work on LINEAR intensity (speckle is multiplicative there); the rest on dB.
All functions are pure numpy on (..., y, x) arrays; NaN is no data and stays NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "db_to_linear",
    "lee_filter",
    "linear_to_db",
    "median_filter",
    "percentile_clip",
    "refined_lee_filter",
    "sar_channels",
    "tanh_squash",
    "vv_vh_ratio_db",
]


#: Linear backscatter below this is treated as no signal before the dB conversion.
MIN_LINEAR = 1e-6


def linear_to_db(lin: np.ndarray | xr.DataArray) -> np.ndarray | xr.DataArray:
    """10·log10 of linear power; nodata (-32768), zero and negative values become NaN.

    numpy in, numpy out (inference reads call it without importing xarray); a DataArray
    stays one."""
    valid = lin > MIN_LINEAR
    if not isinstance(lin, np.ndarray):
        import xarray as xr

        if isinstance(lin, xr.DataArray):
            out = 10.0 * np.log10(xr.where(valid, lin, 1.0))
            return xr.where(valid, out, np.nan).astype("float32")
    out = 10.0 * np.log10(np.where(valid, lin, 1.0))
    return np.where(valid, out, np.nan).astype("float32")


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """Inverse of ``linear_to_db``."""
    return np.power(10.0, np.asarray(db, dtype="float64") / 10.0).astype("float32")


ENL_IW_GRD = 4.4  # equivalent number of looks of Sentinel-1 IW GRDH


def _windows(img: np.ndarray, size: int) -> np.ndarray:
    """(..., y, x, size, size) views on a reflect-padded copy of ``img``."""
    r = size // 2
    pad = [(0, 0)] * (img.ndim - 2) + [(r, r), (r, r)]
    return sliding_window_view(np.pad(img, pad, mode="reflect"), (size, size), axis=(-2, -1))


def median_filter(img: np.ndarray, size: int = 3) -> np.ndarray:
    """Median over a ``size`` x ``size`` window (NaN ignored)."""
    if size % 2 == 0:
        raise ValueError(f"window size must be odd, got {size}")
    out = np.nanmedian(_windows(np.asarray(img, dtype="float64"), size), axis=(-2, -1))
    return np.where(np.isnan(img), np.nan, out).astype("float32")


def _lee_weight(z, mean, var, enl):
    cu2 = 1.0 / enl  # squared coefficient of variation of the speckle
    var_x = np.maximum((var - mean**2 * cu2) / (1.0 + cu2), 0.0)
    b = np.where(var > 0, var_x / np.where(var > 0, var, 1.0), 0.0)
    return mean + b * (z - mean)


def lee_filter(lin: np.ndarray, size: int = 7, enl: float = ENL_IW_GRD) -> np.ndarray:
    """Lee (1980) filter on linear intensity: local mean + b·(z - mean), b from local statistics.

    Homogeneous areas (variance explained by speckle alone) get the local mean; edges and
    point targets (variance far above speckle) keep their value.
    """
    z = np.asarray(lin, dtype="float64")
    w = _windows(z, size)
    mean = np.nanmean(w, axis=(-2, -1))
    var = np.nanvar(w, axis=(-2, -1))
    return np.where(np.isnan(z), np.nan, _lee_weight(z, mean, var, enl)).astype("float32")


def _direction_masks() -> np.ndarray:
    """The 8 half-windows (7x7, centre line included) of the refined Lee filter."""
    i, j = np.mgrid[0:7, 0:7]
    return np.stack(
        [
            i <= 3,  # 0 north half   (horizontal edge)
            i >= 3,  # 1 south half
            j <= 3,  # 2 west half    (vertical edge)
            j >= 3,  # 3 east half
            i + j <= 6,  # 4 north-west   (anti-diagonal edge)
            i + j >= 6,  # 5 south-east
            j >= i,  # 6 north-east   (diagonal edge)
            j <= i,  # 7 south-west
        ]
    )


def refined_lee_filter(lin: np.ndarray, enl: float = ENL_IW_GRD) -> np.ndarray:
    """Refined Lee (Lee 1981) on linear intensity, 7x7: Lee statistics over the half-window on
    the centre's side of the strongest edge, so edges stay sharp while flat areas are smoothed.

    The edge direction comes from the 3x3 means of the nine 3x3 blocks of the window.
    """
    z = np.asarray(lin, dtype="float64")
    if z.ndim > 2:
        return (
            np.stack([refined_lee_filter(z[k], enl) for k in np.ndindex(z.shape[:-2])])
            .reshape(z.shape)
            .astype("float32")
        )
    w = _windows(np.nan_to_num(z, nan=np.nanmean(z) if np.isfinite(z).any() else 0.0), 7)
    # nine 3x3 block means at offsets 0, 2, 4
    m = np.stack(
        [
            np.stack([w[..., a : a + 3, b : b + 3].mean(axis=(-2, -1)) for b in (0, 2, 4)], -1)
            for a in (0, 2, 4)
        ],
        -2,
    )  # (y, x, 3, 3)
    c = m[..., 1, 1]
    grads = np.stack(
        [
            np.abs(m[..., 0, 1] - m[..., 2, 1]),  # north-south change: horizontal edge
            np.abs(m[..., 1, 0] - m[..., 1, 2]),  # west-east change: vertical edge
            np.abs(m[..., 0, 0] - m[..., 2, 2]),  # NW-SE change: anti-diagonal edge
            np.abs(m[..., 0, 2] - m[..., 2, 0]),  # NE-SW change: diagonal edge
        ],
        -1,
    )
    edge = grads.argmax(-1)
    # on which side of the edge is the centre? pick the half whose outer block is closer
    sides = np.stack(
        [
            np.abs(m[..., 0, 1] - c) <= np.abs(m[..., 2, 1] - c),
            np.abs(m[..., 1, 0] - c) <= np.abs(m[..., 1, 2] - c),
            np.abs(m[..., 0, 0] - c) <= np.abs(m[..., 2, 2] - c),
            np.abs(m[..., 0, 2] - c) <= np.abs(m[..., 2, 0] - c),
        ],
        -1,
    )
    first = np.take_along_axis(sides, edge[..., None], -1)[..., 0]
    direction = 2 * edge + np.where(first, 0, 1)  # index into _direction_masks
    masks = _direction_masks().astype("float64")  # (8, 7, 7)
    out = np.empty_like(z)
    for d in range(8):
        sel = direction == d
        if not sel.any():
            continue
        ww = w[sel] * masks[d]
        n = masks[d].sum()
        mean = ww.sum(axis=(-2, -1)) / n
        var = (ww**2).sum(axis=(-2, -1)) / n - mean**2
        out[sel] = _lee_weight(z[sel], mean, var, enl)
    return np.where(np.isnan(z), np.nan, out).astype("float32")


def percentile_clip(
    x: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0
) -> tuple[np.ndarray, float, float]:
    """Cumulative count cut: clip to the [low, high] percentiles of the valid values.

    Returns (clipped, low value, high value) so the same cut can be applied elsewhere.
    """
    lo, hi = np.nanpercentile(np.asarray(x, dtype="float64"), [low_pct, high_pct])
    return np.clip(x, lo, hi).astype("float32"), float(lo), float(hi)


def tanh_squash(db: np.ndarray, centre_db: float = -15.0, scale_db: float = 10.0) -> np.ndarray:
    """tanh((x - centre) / scale): dB into (-1, 1), nearly linear near the centre, bounded tails."""
    return np.tanh((np.asarray(db, dtype="float64") - centre_db) / scale_db).astype("float32")


def vv_vh_ratio_db(vv_db: np.ndarray, vh_db: np.ndarray) -> np.ndarray:
    """VV/VH ratio in dB (a difference): high over bare/pasture, low over forest."""
    return (np.asarray(vv_db, dtype="float32") - np.asarray(vh_db, dtype="float32")).astype(
        "float32"
    )


def sar_channels(vv_db: np.ndarray, vh_db: np.ndarray, *, ratio: bool = False) -> np.ndarray:
    """(2 or 3, y, x) model input: VV, VH and optionally their ratio as a third channel."""
    chans = [vv_db, vh_db] + ([vv_vh_ratio_db(vv_db, vh_db)] if ratio else [])
    return np.stack([np.asarray(c, dtype="float32") for c in chans])
