"""Baselines every model score is printed beside: a constant colour and a per-pixel ridge fit.

A constant train-mean colour already reaches PSNR ~31 dB on vegetated scenes; a linear map
from VV, VH, VV-VH and their local means, fitted on the training pixels of the same scene,
is the cheapest model that uses the radar at all. A deep model earns its cost only by
beating both on held-out pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sar2opt.models import reference as ref
from sar2opt.models.reference import LOCAL_MEAN_PX

# One implementation with the model's ``scene_fit`` reference: the features and the ridge
# are ``sar2opt.models.reference``'s (torch, float64); these are their numpy faces.


def local_mean(x: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """Same-size mean over a ``win_px`` square (odd) around each pixel, ignoring NaN.

    At the edges the window is cut to the image; a pixel whose whole window is NaN stays NaN.
    """
    return ref.local_mean(torch.from_numpy(np.asarray(x, dtype="float64")), win_px).numpy()


def sar_features(sar_db: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """(6, H, W) features from (2, H, W) VV, VH dB: VV, VH, VV-VH and their local means."""
    sar_db = np.asarray(sar_db, dtype="float64")
    if sar_db.ndim != 3 or sar_db.shape[0] != 2:
        raise ValueError(f"sar must be (2, H, W) VV, VH dB, got {sar_db.shape}")
    return ref.sar_features(torch.from_numpy(sar_db), win_px).numpy()


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
        flat = torch.from_numpy(x.reshape(x.shape[0], -1))[None]
        arrays = (self.x_mean, self.x_std, self.coef, self.intercept)
        fit = ref.RidgeFit(*(torch.from_numpy(a)[None] for a in arrays))
        y = ref.apply_ridge(fit, flat)[0].numpy()
        return y.reshape(self.coef.shape[1], *x.shape[1:])


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> Ridge:
    """Closed-form ridge: ``x`` (F, n) features, ``y`` (C, n) targets, unpenalised intercept
    (``models.reference.fit_ridge``: features standardised, so ``alpha`` means the same
    whatever their units). Columns with any NaN are dropped."""
    x = np.asarray(x, dtype="float64").reshape(np.shape(x)[0], -1)
    y = np.asarray(y, dtype="float64").reshape(np.shape(y)[0], -1)
    ok = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)
    if ok.sum() < x.shape[0] + 1:
        raise ValueError(f"ridge needs more than {x.shape[0]} valid samples, got {ok.sum()}")
    t = [torch.from_numpy(a)[None] for a in (x, y, ok)]
    fit = ref.fit_ridge(*t, alpha=alpha)
    arrays = (a[0].numpy() for a in (fit.x_mean, fit.x_std, fit.coef, fit.intercept))
    return Ridge(*arrays, float(alpha))


def feature_stack(sar_db: np.ndarray, win_px: int = LOCAL_MEAN_PX) -> np.ndarray:
    """(T, 6, H, W) :func:`sar_features` of (T, 2, H, W) VV, VH dB."""
    sar_db = np.asarray(sar_db, dtype="float64")
    if sar_db.ndim != 4 or sar_db.shape[1] != 2:
        raise ValueError(f"sar must be (T, 2, H, W) VV, VH dB, got {sar_db.shape}")
    return ref.sar_features(torch.from_numpy(sar_db), win_px).numpy()


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
