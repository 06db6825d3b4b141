"""Cloud-free composite of one block: a real clear Sentinel-2 pixel when there is one, else the
synthesis; plus where each pixel came from and how much the hypotheses disagree.

Pure numpy on arrays the pipeline already holds, so every rule here is tested on numbers.
"""

from __future__ import annotations

import numpy as np

#: ``source`` band values.
SOURCE_NODATA = 0  # neither a clear S2 pixel nor valid SAR
SOURCE_S2 = 1  # a real, clear Sentinel-2 pixel within ±max_dt_days
SOURCE_SYNTH = 2  # predicted from Sentinel-1
SOURCE_MEANINGS = {SOURCE_NODATA: "no data", SOURCE_S2: "sentinel-2", SOURCE_SYNTH: "synthesis"}


def nearest_clear(
    obs: np.ndarray, clear: np.ndarray, dt_days: np.ndarray, max_dt_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the clear observation nearest in time within ±``max_dt_days``.

    ``obs`` (N, C, H, W) reflectance, ``clear`` (N, H, W) bool, ``dt_days`` (N,) signed
    offsets from the target date. Returns (C, H, W) values (NaN where none) and an
    (H, W) bool of where one was found. Ties go to the earlier observation in ``obs``.
    """
    obs = np.asarray(obs, dtype=np.float32)
    n, c, h, w = obs.shape
    found = np.zeros((h, w), bool)
    out = np.full((c, h, w), np.nan, np.float32)
    if n == 0:
        return out, found
    dt = np.abs(np.asarray(dt_days, dtype=np.float64))
    ok = np.asarray(clear, bool) & np.isfinite(obs).all(axis=1) & (dt <= max_dt_days)[:, None, None]
    for k in np.argsort(dt, kind="stable"):
        take = ok[k] & ~found
        out[:, take] = obs[k][:, take]
        found |= take
    return out, found


def compose(
    pred: np.ndarray, s2: np.ndarray, s2_found: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Composite (C, H, W) and ``source`` (H, W) uint8 from a prediction and clear S2 pixels."""
    pred = np.asarray(pred, dtype=np.float32)
    out = np.where(s2_found[None], s2, pred).astype(np.float32)
    source = np.full(s2_found.shape, SOURCE_NODATA, np.uint8)
    source[np.isfinite(pred).all(axis=0)] = SOURCE_SYNTH
    source[s2_found] = SOURCE_S2
    return out, source
