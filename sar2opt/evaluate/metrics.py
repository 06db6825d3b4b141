"""Pure metrics on reflectance arrays (band, y, x), restricted to a boolean mask.

Scores are only meaningful beside baselines: a constant mean colour already reaches
PSNR ≈ 31 dB on vegetated scenes, so callers print ``constant_baseline`` next to a model.
"""

from __future__ import annotations

import numpy as np

# Reflectance units: PSNR is stated against a data range of 1.0 (reflectance 0-1).
DATA_RANGE = 1.0


def _pairs(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None):
    ok = np.isfinite(pred).all(axis=0) & np.isfinite(truth).all(axis=0)
    if mask is not None:
        ok &= mask.astype(bool)
    if not ok.any():
        raise ValueError("no valid pixels to score")
    return pred[:, ok].astype("float64"), truth[:, ok].astype("float64"), int(ok.sum())


def mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over valid masked pixels and all bands."""
    p, t, _ = _pairs(pred, truth, mask)
    return float(np.abs(p - t).mean())


def rmse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    p, t, _ = _pairs(pred, truth, mask)
    return float(np.sqrt(((p - t) ** 2).mean()))


def psnr(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
) -> float:
    """10·log10(range² / MSE) in dB; data range stated (1.0 for reflectance)."""
    p, t, _ = _pairs(pred, truth, mask)
    mse = ((p - t) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def constant_baseline(mean_colour: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The 'predict the training mean colour everywhere' baseline, shaped like ``like``."""
    mean_colour = np.asarray(mean_colour, dtype="float32").reshape(-1, 1, 1)
    return np.broadcast_to(mean_colour, like.shape).astype("float32")


def score_table(
    preds: dict[str, np.ndarray], truth: np.ndarray, mask: np.ndarray | None = None
) -> list[dict]:
    """One row per named prediction: MAE, RMSE, PSNR and the pixel count."""
    rows = []
    for name, pred in preds.items():
        _, _, n = _pairs(pred, truth, mask)
        rows.append(
            {
                "name": name,
                "mae": mae(pred, truth, mask),
                "rmse": rmse(pred, truth, mask),
                "psnr_db": psnr(pred, truth, mask),
                "pixels": n,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'':24s} {'MAE':>8s} {'RMSE':>8s} {'PSNR dB':>8s} {'pixels':>9s}"]
    for r in rows:
        lines.append(
            f"{r['name']:24s} {r['mae']:8.4f} {r['rmse']:8.4f} {r['psnr_db']:8.2f} {r['pixels']:9d}"
        )
    return "\n".join(lines)
