"""Does the stated uncertainty mean what it says? Mean |error| per bin of stated uncertainty.

The predictor's ``uncertainty`` (the spread of its hypotheses, scaled by any calibration the
checkpoint carries) is useful only if, where it says 0.01, the error is about 0.01. Pixels are
sorted by stated uncertainty and cut into ``n_bins`` bins of equal count (deciles by
default); a calibrated predictor has, in every bin, a mean |error| close to its mean stated
uncertainty (the issue's bar: within ±25 %).

Neighbouring pixels err together (one cloud, one field), so a bin's ratio rests on far fewer
independent samples than pixels (a decile of a real set's test blocks may hold a few
blocks). With each pixel's ``groups`` id (a block of one date and seed,
``evaluate.protocol``) the table also gives each bin's 90 % interval of |error| / stated over
a bootstrap of the groups, so a reader can tell a miss from a bin too small to say. It is
the sampling's spread only: a retrained checkpoint moves the ratios too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: |error| / stated within this factor of 1 counts as calibrated in the report.
CALIBRATED_TOL = 0.25
#: Side of the blocks pixels are grouped in for the bootstrap (one date, one seed each):
#: about a cloud's or a field's size at 10 m.
GROUP_BLOCK_PX = 32
#: Bootstrap draws of the groups, and the interval they give (5th-95th percentile).
BOOTSTRAP_DRAWS = 200
INTERVAL = (5.0, 95.0)


@dataclass(frozen=True)
class ReliabilityRow:
    """One bin: its index (0 = least uncertain), mean stated uncertainty, mean |error|, pixels."""

    bin: int
    stated: float
    abs_error: float
    count: int
    #: 90 % interval of |error| / stated over a bootstrap of the pixels' groups (None
    #: without groups).
    ratio_lo: float | None = None
    ratio_hi: float | None = None

    @property
    def ratio(self) -> float:
        """Measured over stated (1 = calibrated; > 1: the uncertainty is too small)."""
        return self.abs_error / self.stated if self.stated > 0 else float("inf")


def reliability_table(
    uncertainty: np.ndarray,
    abs_error: np.ndarray,
    n_bins: int = 10,
    groups: np.ndarray | None = None,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> list[ReliabilityRow]:
    """Rows (bin, mean stated, mean |error|, count) over equal-count bins of ``uncertainty``;
    with ``groups`` (an id per pixel) each bin's interval of |error| / stated too
    (:func:`ratio_intervals`).

    Pairs where either value is not finite are dropped; ties are broken by position (stable
    sort), so the bins are deterministic. Fewer pixels than bins gives fewer, one-pixel bins;
    none gives no row.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    u = np.asarray(uncertainty, dtype="float64").ravel()
    e = np.asarray(abs_error, dtype="float64").ravel()
    if u.shape != e.shape:
        raise ValueError(f"uncertainty {u.shape} and |error| {e.shape} differ in size")
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    order = np.argsort(u, kind="stable")
    parts = np.array_split(order, min(n_bins, u.size)) if u.size else []
    bins = np.empty(u.size, dtype=np.int64)
    for k, part in enumerate(parts):
        bins[part] = k
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * len(parts)
    if groups is not None and u.size:
        g = np.asarray(groups).ravel()
        if g.shape != ok.shape:
            raise ValueError(f"groups {g.shape} and |error| {ok.shape} differ in size")
        bounds = ratio_intervals(u, e, bins, g[ok], draws, seed)
    return [
        ReliabilityRow(k, float(u[part].mean()), float(e[part].mean()), part.size, *bounds[k])
        for k, part in enumerate(parts)
    ]


def pixel_groups(mask: np.ndarray, run: int = 0) -> np.ndarray:
    """Group ids (int64) of the True pixels of ``mask`` (T, H, W), in ``mask[mask]`` order:
    one group per ``GROUP_BLOCK_PX`` block of one date, and of one ``run`` (e.g. the
    seed's index: its laid clouds are another draw)."""
    t, y, x = np.nonzero(np.asarray(mask, bool))
    n_t, h, w = mask.shape
    nby, nbx = -(-h // GROUP_BLOCK_PX), -(-w // GROUP_BLOCK_PX)
    by, bx = y // GROUP_BLOCK_PX, x // GROUP_BLOCK_PX
    return (((np.int64(run) * n_t + t) * nby + by) * nbx + bx).astype(np.int64)


def ratio_intervals(
    u: np.ndarray, e: np.ndarray, bins: np.ndarray, groups: np.ndarray, draws: int, seed: int
) -> list[tuple[float, float]]:
    """Per bin, the ``INTERVAL`` percentiles of sum |error| / sum stated over ``draws``
    resamplings of the groups with replacement (a group keeps all its pixels; the bins stay
    those of the full sample). A bin that a draw leaves empty does not count in that draw."""
    _, g = np.unique(groups, return_inverse=True)
    n_groups, n_bins = int(g.max()) + 1, int(bins.max()) + 1
    rng = np.random.default_rng(seed)
    ratios = np.full((draws, n_bins), np.nan)
    for d in range(draws):
        w = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[g]
        su = np.bincount(bins, weights=w * u, minlength=n_bins)
        se = np.bincount(bins, weights=w * e, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios[d] = np.where(su > 0, se / su, np.nan)
    lo, hi = np.nanpercentile(ratios, INTERVAL, axis=0)
    return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]


def reliability_figure(tables: dict[str, list[ReliabilityRow]]):
    """Mean |error| against mean stated uncertainty per bin, one line per method, with the
    diagonal (calibrated) and its ±``CALIBRATED_TOL`` band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.2), dpi=90, layout="constrained")
    ax = fig.subplots()
    top = max(max(r.stated, r.abs_error) for rows in tables.values() for r in rows) * 1.1
    xs = np.array([0.0, top])
    ax.fill_between(
        xs, xs * (1 - CALIBRATED_TOL), xs * (1 + CALIBRATED_TOL), color="0.9", label="±25 %"
    )
    ax.plot(xs, xs, color="0.4", lw=0.8, ls="--", label="calibrated")
    for name, rows in tables.items():
        ax.plot([r.stated for r in rows], [r.abs_error for r in rows], marker="o", label=name)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("stated uncertainty (mean per bin, reflectance)")
    ax.set_ylabel("measured mean |error|")
    ax.legend(fontsize=7)
    return fig
