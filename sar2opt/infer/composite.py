"""Cloud-free composite of one block: a real clear Sentinel-2 pixel when there is one, else the
synthesis; plus where each pixel came from and how much the hypotheses disagree.

Pure numpy on arrays the pipeline already holds, so every rule here is tested on numbers.
"""

from __future__ import annotations

import numpy as np

#: ``source`` band values (stable: new ones are appended).
SOURCE_NODATA = 0  # neither a clear S2 pixel nor a prediction (no SAR, or no DEM for SD/SOD)
SOURCE_S2 = 1  # a real, clear Sentinel-2 pixel within ±max_dt_days
SOURCE_SYNTH = 2  # predicted from Sentinel-1 (and the DEM) alone: no optical evidence
SOURCE_SYNTH_PRIOR = 3  # predicted from Sentinel-1 + the prior clear S2 (SO/SOD models)
#: predicted by a cloud-removal model (SC/SCO/SCOD) where it saw that date's S2 observation
#: of the pixel: cloudy (filled under the mask), or clear when the composite is off
SOURCE_CLOUD_REMOVED = 4
SOURCE_MEANINGS = {
    SOURCE_NODATA: "no data",
    SOURCE_S2: "sentinel-2",
    SOURCE_SYNTH: "synthesis",
    SOURCE_SYNTH_PRIOR: "synthesis with prior",
    SOURCE_CLOUD_REMOVED: "cloud removed",
}
#: How good each source is as evidence (lower wins; ``periods.BestEvidence``): a real clear
#: S2 pixel, then a cloud removal (it saw that date's S2 and the clear pixels around), then
#: a synthesis that saw the place's last clear image, then SAR alone. "no data" never wins.
#: Ranks are internal; the codes above are what stores keep.
EVIDENCE_RANK = {SOURCE_S2: 1, SOURCE_CLOUD_REMOVED: 2, SOURCE_SYNTH_PRIOR: 3, SOURCE_SYNTH: 4}
NO_RANK = 255


def evidence_rank(source: np.ndarray) -> np.ndarray:
    """Per pixel, the rank of its ``source`` (``EVIDENCE_RANK``; ``NO_RANK`` for no data)."""
    table = np.full(256, NO_RANK, np.uint8)
    for code, rank in EVIDENCE_RANK.items():
        table[code] = rank
    return table[np.asarray(source, np.uint8)]


def nearest_clear_pick(
    obs: np.ndarray, clear: np.ndarray, dt_days: np.ndarray, max_dt_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the clear observation nearest in time within ±``max_dt_days``.

    ``obs`` (N, C, H, W) reflectance, ``clear`` (N, H, W) bool, ``dt_days`` (N,) signed
    offsets from the target date. Returns (C, H, W) values (NaN where none) and which
    observation each pixel took: (H, W) int index into ``obs``, -1 where none (``obs_time``
    records its date). Ties go to the earlier observation in ``obs``.
    """
    obs = np.asarray(obs, dtype=np.float32)
    n, c, h, w = obs.shape
    pick = np.full((h, w), -1, np.int64)
    out = np.full((c, h, w), np.nan, np.float32)
    if n == 0:
        return out, pick
    dt = np.abs(np.asarray(dt_days, dtype=np.float64))
    ok = np.asarray(clear, bool) & np.isfinite(obs).all(axis=1) & (dt <= max_dt_days)[:, None, None]
    for k in np.argsort(dt, kind="stable"):
        take = ok[k] & (pick < 0)
        out[:, take] = obs[k][:, take]
        pick[take] = k
    return out, pick


def synthesis_source(
    pred: np.ndarray,
    with_prior: np.ndarray | None = None,
    same_date: np.ndarray | None = None,
) -> np.ndarray:
    """``source`` (H, W) uint8 of a prediction (C, H, W) alone: no data where it is NaN,
    else synthesis, "with prior" where ``with_prior`` (H, W) says the model had one (None:
    the model reads no prior), "cloud removed" where ``same_date`` (H, W) says a cloud-removal
    model saw that date's S2 observation of the pixel (None: the model reads none)."""
    valid = np.isfinite(pred).all(axis=0)
    source = np.where(valid, np.uint8(SOURCE_SYNTH), np.uint8(SOURCE_NODATA))
    if with_prior is not None:
        source[valid & with_prior] = SOURCE_SYNTH_PRIOR
    if same_date is not None:
        source[valid & same_date] = SOURCE_CLOUD_REMOVED
    return source
