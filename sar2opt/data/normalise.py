"""Per-band standardisation.

Statistics come from the training split only and travel inside the checkpoint, so inference
applies exactly the transform the model was trained with. Works on numpy arrays and torch
tensors alike (channel axis is the third from last: ``(..., C, H, W)``).
"""

from __future__ import annotations

import numpy as np

MIN_STD = 1e-6  # a constant band (e.g. an all-water patch set) must not divide by zero


def band_stats(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of ``x`` (N, C, H, W), over pixels where ``mask`` (N, 1, H, W) > 0.

    The mask keeps cloudy or nodata optical pixels out of the statistics. Accumulates in
    float64 (hundreds of 128 px patches overflow float32 precision) and returns float32.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"band_stats expects (N, C, H, W), got shape {x.shape}")
    c = x.shape[1]
    flat = np.moveaxis(x, 1, 0).reshape(c, -1).astype(np.float64)
    if mask is None:
        sel = np.ones(flat.shape[1], dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ValueError(f"mask shape {m.shape} does not match x {x.shape}")
        sel = (m[:, 0] > 0).reshape(-1)
    sel = sel & np.isfinite(flat).all(axis=0)
    if not sel.any():
        raise ValueError("band_stats: no valid pixels (mask empty or all NaN)")
    vals = flat[:, sel]
    mean = vals.mean(axis=1)
    std = np.maximum(vals.std(axis=1), MIN_STD)
    return mean.astype(np.float32), std.astype(np.float32)


def _per_channel(v: object, x: object) -> object:
    """Shape a (C,) statistic to broadcast over (..., C, H, W), in x's array library."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.as_tensor(np.asarray(v), dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return np.asarray(v, dtype=np.asarray(x).dtype).reshape(-1, 1, 1)


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per band; the model works in these units."""
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def denormalise(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise`: model output back to physical units (reflectance, dB)."""
    return y * _per_channel(std, y) + _per_channel(mean, y)
