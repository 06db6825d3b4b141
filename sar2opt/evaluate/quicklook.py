"""Side-by-side quicklook PNG: SAR input | predicted optical | real Sentinel-2 | error.

Meant for eyeballing a checkpoint or a mosaic tile: prediction and truth share one
stretch, so a colour difference in the PNG is a difference in the data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RGB_BANDS = ("B04", "B03", "B02")


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def percentile_limits(values: np.ndarray, p: tuple[float, float]) -> tuple[float, float]:
    """(lo, hi) stretch limits: the ``p`` percentiles of the finite values ((0, 1) if none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, p)
    return float(lo), float(hi)


def to_rgba(channels: Sequence[np.ndarray], limits: Sequence[tuple[float, float]]) -> np.ndarray:
    """(H, W, 4) image; NaN pixels transparent so the panel background shows no-data."""
    rgb = np.stack(
        [_stretch(c, lo, hi) for c, (lo, hi) in zip(channels, limits, strict=True)], axis=-1
    )
    ok = np.all(np.isfinite(rgb), axis=-1)
    rgb = np.where(ok[..., None], rgb, 0.0)
    return np.concatenate([rgb, ok[..., None].astype(float)], axis=-1)


def sar_false_colour(sar_db: np.ndarray, p: tuple[float, float] = (2, 98)) -> np.ndarray:
    """R = VV, G = VH, B = VV/VH ratio (dB difference), each stretched on its percentiles."""
    vv, vh = np.asarray(sar_db[0], float), np.asarray(sar_db[1], float)
    chans = [vv, vh, vv - vh]
    return to_rgba(chans, [percentile_limits(c, p) for c in chans])


def write_quicklook(
    png_path: str | Path,
    sar_db: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None,
    band_names: Sequence[str],
    title: str = "",
    *,
    sar_time: str | None = None,
    truth_time: str | None = None,
    percentiles: tuple[float, float] = (2, 98),
    panel_in: float = 4.0,
    dpi: int = 100,
) -> Path:
    """Write a PNG of (2 or) 4 panels; returns its path.

    ``sar_db`` (2, H, W) VV, VH in dB; ``pred``/``truth`` (C, H, W) reflectance with
    ``band_names`` naming C (must include B04, B03, B02). The true-colour stretch is one
    percentile range over all three bands of prediction and truth together. The PNG is
    ``panel_in * n_panels`` by ``panel_in + 0.6`` inches at ``dpi``.
    """
    # A bare Figure renders PNG with Agg and never touches pyplot's global backend state.
    from matplotlib.figure import Figure

    names = list(band_names)
    missing = [b for b in RGB_BANDS if b not in names]
    if missing:
        raise ValueError(f"quicklook needs bands {RGB_BANDS}, missing {missing}")
    idx = [names.index(b) for b in RGB_BANDS]
    pred_rgb = [np.asarray(pred[i], float) for i in idx]
    truth_rgb = [np.asarray(truth[i], float) for i in idx] if truth is not None else None
    pool = np.concatenate([c.ravel() for c in pred_rgb + (truth_rgb or [])])
    lim = percentile_limits(pool, percentiles)

    panels: list[tuple[np.ndarray, str, dict]] = [
        (sar_false_colour(sar_db, percentiles), _caption("S1 VV | VH | VV/VH", sar_time), {}),
        (to_rgba(pred_rgb, [lim] * 3), _caption("predicted B04/B03/B02", sar_time), {}),
    ]
    if truth is not None:
        with warnings.catch_warnings():  # all-NaN pixels (no data) stay NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            err = np.nanmean(np.abs(np.asarray(pred, float) - np.asarray(truth, float)), axis=0)
        panels.append(
            (to_rgba(truth_rgb, [lim] * 3), _caption("Sentinel-2 B04/B03/B02", truth_time), {})
        )
        panels.append((err, "mean |pred - S2| (reflectance)", {"cmap": "magma", "vmin": 0.0}))

    n = len(panels)
    fig = Figure(figsize=(panel_in * n, panel_in + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (img, caption, kw) in zip(axes, panels, strict=True):
        ax.set_facecolor("0.5")
        im = ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(caption, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if kw.get("cmap"):
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=dpi)
    return png_path


def _caption(what: str, when: str | None) -> str:
    return f"{what}\n{when[:19].replace('T', ' ')}" if when else what
