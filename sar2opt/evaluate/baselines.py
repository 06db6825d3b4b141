"""Baselines every model score is printed beside: a constant colour and a per-pixel ridge fit.

A constant train-mean colour already reaches PSNR ~31 dB on vegetated scenes; a linear map
from VV, VH, VV-VH and their local means, fitted on the training pixels of the same scene,
is the cheapest model that uses the radar at all. A deep model earns its cost only by
beating both on held-out pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar2opt.ops import box_sum

#: Side of the square window for the local-mean features (pixels): 5 px = 50 m at 10 m,
#: enough to average speckle while keeping field edges.
LOCAL_MEAN_PX = 5


def local_mean(x: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """Same-size mean over a ``win_px`` square (odd) around each pixel, ignoring NaN.

    At the edges the window is cut to the image; a pixel whose whole window is NaN stays NaN.
    """
    if win_px % 2 != 1 or win_px < 1:
        raise ValueError(f"local-mean window must be odd and >= 1, got {win_px}")
    x = np.asarray(x, dtype="float64")
    ok = np.isfinite(x)
    r = win_px // 2
    vals = np.pad(np.where(ok, x, 0.0), r)
    cnt = np.pad(ok.astype("float64"), r)

    n = box_sum(cnt, win_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, box_sum(vals, win_px) / n, np.nan)


def sar_features(sar_db: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """(6, H, W) features from (2, H, W) VV, VH dB: VV, VH, VV-VH and their local means."""
    sar_db = np.asarray(sar_db, dtype="float64")
    if sar_db.ndim != 3 or sar_db.shape[0] != 2:
        raise ValueError(f"sar must be (2, H, W) VV, VH dB, got {sar_db.shape}")
    vv, vh = sar_db
    base = [vv, vh, vv - vh]
    return np.stack(base + [local_mean(b, win_px) for b in base])


def constant_colour(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-band mean of ``truth`` (C, ...) over ``mask`` (...): the train-mean colour."""
    truth = np.asarray(truth, dtype="float64")
    m = np.asarray(mask, dtype=bool) & np.isfinite(truth).all(axis=0)
    if not m.any():
        raise ValueError("no training pixel for the mean colour")
    return truth[:, m].mean(axis=1)


@dataclass(frozen=True)
class Ridge:
    """Linear map from standardised features to bands; ``coef`` (F, C), ``intercept`` (C,)."""

    x_mean: np.ndarray
    x_std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(F, ...) features -> (C, ...) prediction; NaN wherever a feature is NaN."""
        x = np.asarray(x, dtype="float64")
        f = x.shape[0]
        flat = x.reshape(f, -1)
        z = (flat - self.x_mean[:, None]) / self.x_std[:, None]
        y = self.coef.T @ np.nan_to_num(z) + self.intercept[:, None]
        y[:, ~np.isfinite(flat).all(axis=0)] = np.nan
        return y.reshape(self.coef.shape[1], *x.shape[1:])


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> Ridge:
    """Closed-form ridge: ``x`` (F, n) features, ``y`` (C, n) targets, unpenalised intercept.

    Features are standardised first, so ``alpha`` means the same whatever their units;
    solves (ZᵀZ + alpha·I) w = Zᵀ(y - ȳ). Columns with any NaN are dropped.
    """
    x = np.asarray(x, dtype="float64").reshape(np.shape(x)[0], -1)
    y = np.asarray(y, dtype="float64").reshape(np.shape(y)[0], -1)
    ok = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)
    if ok.sum() < x.shape[0] + 1:
        raise ValueError(f"ridge needs more than {x.shape[0]} valid samples, got {ok.sum()}")
    x, y = x[:, ok], y[:, ok]
    mu, sd = x.mean(axis=1), x.std(axis=1)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x - mu[:, None]) / sd[:, None]
    ym = y.mean(axis=1)
    gram = z @ z.T + alpha * np.eye(z.shape[0])
    coef = np.linalg.solve(gram, z @ (y - ym[:, None]).T)  # (F, C)
    return Ridge(mu, sd, coef, ym, float(alpha))


def feature_stack(sar_db: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """(T, 6, H, W) :func:`sar_features` of (T, 2, H, W) VV, VH dB."""
    return np.stack([sar_features(s, win_px) for s in sar_db])


@dataclass(frozen=True)
class SarRidge:
    """A ridge from :func:`sar_features` (window ``win_px``) to optical bands."""

    ridge: Ridge
    win_px: int = LOCAL_MEAN_PX

    def predict(self, sar_db: np.ndarray) -> np.ndarray:
        """(T, 2, H, W) VV, VH dB -> (T, C, H, W) float32; NaN where a feature is NaN."""
        feats = feature_stack(sar_db, self.win_px)
        return np.moveaxis(self.ridge.predict(np.moveaxis(feats, 1, 0)), 0, 1).astype("float32")


def fit_sar_ridge(
    sar_db: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    alpha: float = 1.0,
    win_px: int = LOCAL_MEAN_PX,
) -> SarRidge:
    """The ridge baseline fitted on the ``mask`` pixels: ``sar_db`` (T, 2, H, W) VV, VH dB,
    ``truth`` (T, C, H, W) reflectance, ``mask`` (T, H, W) boolean, e.g. clear and in a
    training block. T dates of a scene (one fit over all: pass T = 1 slices for a per-date
    fit) or T patches."""
    feats = feature_stack(sar_db, win_px)
    m = np.asarray(mask, dtype=bool)
    x = np.moveaxis(feats, 1, 0)[:, m]
    y = np.moveaxis(np.asarray(truth, dtype="float64"), 1, 0)[:, m]
    return SarRidge(fit_ridge(x, y, alpha), win_px)
