"""Does the stated uncertainty mean what it says? Mean |error| per bin of stated uncertainty.

The predictor's ``uncertainty`` (the spread of its hypotheses, scaled by any calibration the
checkpoint carries) is useful only if, where it says 0.01, the error is about 0.01. Pixels are
sorted by stated uncertainty and cut into ``n_bins`` bins of equal count (deciles by
default); a calibrated predictor has, in every bin, a mean |error| close to its mean stated
uncertainty (the issue's bar: within ±25 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: |error| / stated within this factor of 1 counts as calibrated in the report.
CALIBRATED_TOL = 0.25


@dataclass(frozen=True)
class ReliabilityRow:
    """One bin: its index (0 = least uncertain), mean stated uncertainty, mean |error|, pixels."""

    bin: int
    stated: float
    abs_error: float
    count: int

    @property
    def ratio(self) -> float:
        """Measured over stated (1 = calibrated; > 1: the uncertainty is too small)."""
        return self.abs_error / self.stated if self.stated > 0 else float("inf")


def reliability_table(
    uncertainty: np.ndarray, abs_error: np.ndarray, n_bins: int = 10
) -> list[ReliabilityRow]:
    """Rows (bin, mean stated, mean |error|, count) over equal-count bins of ``uncertainty``.

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
    rows = []
    for part in np.array_split(order, min(n_bins, u.size)) if u.size else []:
        rows.append(
            ReliabilityRow(len(rows), float(u[part].mean()), float(e[part].mean()), part.size)
        )
    return rows


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
