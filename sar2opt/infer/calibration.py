"""Uncertainty that means what it says: the hypotheses' spread mapped to the expected |error|.

The spread of a few test-time-flip hypotheses ranks errors but is not in their units (on the
synthetic demo it is ~3x smaller than the error). After training, ``fit_calibration`` bins
the validation pixels by their spread (equal-count bins), takes each bin's mean spread and
mean |error| (band mean, reflectance) and makes the error non-decreasing in the spread
(pool-adjacent-violators, weighted by pixels): a few knots. ``apply_calibration``
interpolates between them: the knots' mean errors inside, the lowest knot's error below,
and above the highest knot the error grows in proportion to the spread (the most
uncertain pixels keep their order). Pure numpy: the training job fits, the predictor applies,
tests check both on numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Checkpoint metadata key: a list of ``{"flips", "spread", "abs_error", "pixels"}``, one per
#: hypothesis count the predictor may run (``infer.tta_flips``).
CALIBRATION_KEY = "uncertainty_calibration"
#: Equal-count bins of the validation spread (before pooling): ~2.5 k pixels each on the demo.
CALIBRATION_BINS = 20
#: What a calibration maps (its ``input``): the predictor's ``raw_uncertainty``, the spread
#: combined with a scene-fit reference's own error (``infer.predictor``). Entries without it
#: (older checkpoints) were fitted on the spread alone and are applied to it.
STATED_INPUT = "spread+reference"
#: What the store attrs say when the checkpoint carries no calibration for the run.
UNCALIBRATED = "uncalibrated"


def _pool_adjacent_violators(
    y: np.ndarray, w: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) fit of ``y``; blocks that tie are merged into one
    knot (weighted means of ``x`` and ``y``), so the knots rise strictly."""
    blocks: list[list[float]] = []  # [sum w*y, sum w, sum w*x]
    for yi, wi, xi in zip(y, w, x, strict=True):
        blocks.append([yi * wi, wi, xi * wi])
        while len(blocks) > 1 and (blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]):
            a, b = blocks[-2], blocks.pop()
            a[0] += b[0]
            a[1] += b[1]
            a[2] += b[2]
    arr = np.array(blocks, np.float64)
    return arr[:, 2] / arr[:, 1], arr[:, 0] / arr[:, 1], arr[:, 1]


def fit_calibration(
    spread: np.ndarray, abs_error: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, list[float] | int]:
    """Knots mapping the spread to the expected |error| (both per pixel, any shape; NaN
    pixels are left out): ``{"spread": [...], "abs_error": [...], "pixels": n}``, both
    lists strictly increasing. ValueError with no pixel to fit on."""
    s = np.asarray(spread, np.float64).reshape(-1)
    e = np.asarray(abs_error, np.float64).reshape(-1)
    if s.shape != e.shape:
        raise ValueError(f"spread and abs_error differ in size: {s.size} != {e.size}")
    ok = np.isfinite(s) & np.isfinite(e)
    s, e = s[ok], e[ok]
    if s.size == 0:
        raise ValueError("no finite pixel to calibrate the uncertainty on")
    order = np.argsort(s, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, s.size)) if g.size]
    x = np.array([s[g].mean() for g in groups])
    y = np.array([e[g].mean() for g in groups])
    w = np.array([float(g.size) for g in groups])
    # bins of equal spread (ties split across bins) are one knot
    keep = np.r_[True, np.diff(x) > 0]
    idx = np.cumsum(keep) - 1
    wx = np.bincount(idx, w * x) / np.bincount(idx, w)
    wy = np.bincount(idx, w * y) / np.bincount(idx, w)
    kx, ky, _ = _pool_adjacent_violators(wy, np.bincount(idx, w), wx)
    return {"spread": kx.tolist(), "abs_error": ky.tolist(), "pixels": int(s.size)}


def apply_calibration(spread: np.ndarray, knots: Mapping[str, Sequence[float]]) -> np.ndarray:
    """The expected |error| (float32, the shape of ``spread``) at each spread: linear
    between the knots, the first knot's error below them, proportional to the spread above
    the last (one knot: proportional everywhere). NaN stays NaN."""
    s = np.asarray(spread, np.float32)
    x = np.asarray(knots["spread"], np.float64)
    y = np.asarray(knots["abs_error"], np.float64)
    if x.size == 0 or x.size != y.size:
        raise ValueError("calibration knots must be two lists of equal, non-zero length")
    if x.size == 1:
        out = s * np.float32(y[0] / x[0]) if x[0] > 0 else np.full_like(s, y[0])
        return np.where(np.isfinite(s), out, np.nan).astype(np.float32)
    inside = np.interp(s, x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        above = y[-1] * s / x[-1] if x[-1] > 0 else y[-1]
    out = np.where(s > x[-1], above, inside)
    return np.where(np.isfinite(s), out, np.nan).astype(np.float32)


def knots_for(meta: Mapping, flips: int) -> dict | None:
    """The calibration of a checkpoint's metadata fitted for ``flips`` hypotheses; None
    when it has none (checkpoints older than calibration, or another hypothesis count)."""
    for entry in meta.get(CALIBRATION_KEY) or ():
        if int(entry.get("flips", -1)) == int(flips):
            return entry
    return None


def _maps_raw(knots: Mapping) -> bool:
    return knots.get("input") == STATED_INPUT


def calibrated(knots: Mapping, spread: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The expected |error| by ``knots``: from the predictor's ``raw`` uncertainty for a
    calibration fitted on it (``STATED_INPUT``), from the ``spread`` for an older one."""
    return apply_calibration(raw if _maps_raw(knots) else spread, knots)


def describe(knots: Mapping | None) -> str:
    """What the store attrs say about the ``uncertainty`` band."""
    if knots is None:
        return UNCALIBRATED
    what = "the spread" + (
        " and the scene fit's error (where checked, scaled by how far it extrapolates)"
        if _maps_raw(knots)
        else ""
    )
    on = f" of {knots['fitted_on']}" if knots.get("fitted_on") else ""
    return (
        f"calibrated: expected |error| (band mean, reflectance) from {what} of "
        f"{knots['flips']} hypotheses, fitted on {knots['pixels']} validation pixels{on}"
    )


def decile_table(
    uncertainty: np.ndarray, abs_error: np.ndarray, n: int = 10
) -> list[dict[str, float]]:
    """Reliability per ``n``-quantile of stated ``uncertainty`` (equal-count, by rank):
    each row's mean stated uncertainty, mean |error|, their ratio and pixel count."""
    u = np.asarray(uncertainty, np.float64).reshape(-1)
    e = np.asarray(abs_error, np.float64).reshape(-1)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    rows = []
    for g in np.array_split(np.argsort(u, kind="stable"), n):
        if g.size == 0:
            continue
        mu, me = float(u[g].mean()), float(e[g].mean())
        rows.append(
            {
                "stated": mu,
                "abs_error": me,
                "ratio": me / mu if mu > 0 else float("inf"),
                "pixels": int(g.size),
            }
        )
    return rows


def format_decile_table(rows: Sequence[Mapping[str, float]]) -> str:
    """The decile table as text (what the training job prints)."""
    lines = [f"{'decile':>6s} {'stated':>9s} {'|error|':>9s} {'ratio':>6s} {'pixels':>8s}"]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"{i:6d} {r['stated']:9.5f} {r['abs_error']:9.5f} {r['ratio']:6.2f} {r['pixels']:8d}"
        )
    return "\n".join(lines)
