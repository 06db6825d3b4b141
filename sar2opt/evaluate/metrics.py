"""Pure metrics on reflectance arrays (band, y, x), restricted to a boolean mask.

Scores are only meaningful beside baselines: a constant mean colour already reaches
PSNR ≈ 31 dB on vegetated scenes, so callers print ``constant_baseline`` next to a model.
"""

from __future__ import annotations

import numpy as np

from sar2opt.ops import box_sum

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


# --- structure, spectra, multiple hypotheses, regions -------------------------------------

#: SSIM window: a uniform (box) window of SSIM_WIN_PX x SSIM_WIN_PX pixels, K1 = 0.01,
#: K2 = 0.03, sample (N-1) covariances: the defaults of scikit-image's structural_similarity.
SSIM_WIN_PX = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_from_moments(
    mp: np.ndarray,
    mt: np.ndarray,
    vp: np.ndarray,
    vt: np.ndarray,
    vpt: np.ndarray,
    data_range: float = DATA_RANGE,
) -> np.ndarray:
    """Wang et al.'s SSIM from a window's means, variances and covariance (K1, K2 above): one
    formula for the box window of validation and the gaussian one of evaluation."""
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mp * mt + c1) * (2 * vpt + c2)) / ((mp**2 + mt**2 + c1) * (vp + vt + c2))


def ssim_map(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
    win_px: int = SSIM_WIN_PX,
) -> np.ndarray:
    """SSIM of each band at each window position, NaN where the window holds an invalid pixel.

    ``pred``/``truth`` (C, H, W); returns (C, H - win + 1, W - win + 1). A window counts only
    when all its pixels are finite in both images and inside ``mask``.
    """
    pred = np.asarray(pred, dtype="float64")
    truth = np.asarray(truth, dtype="float64")
    ok = np.isfinite(pred).all(axis=0) & np.isfinite(truth).all(axis=0)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    if min(ok.shape) < win_px:
        raise ValueError(f"image {ok.shape} is smaller than the SSIM window {win_px}")
    full = box_sum(ok, win_px) >= win_px * win_px - 0.5
    n = win_px * win_px
    out = []
    for p, t in zip(pred, truth, strict=True):
        p, t = np.where(ok, p, 0.0), np.where(ok, t, 0.0)
        mp, mt = box_sum(p, win_px) / n, box_sum(t, win_px) / n
        cov = n / (n - 1)
        vp = (box_sum(p * p, win_px) / n - mp * mp) * cov
        vt = (box_sum(t * t, win_px) / n - mt * mt) * cov
        vpt = (box_sum(p * t, win_px) / n - mp * mt) * cov
        s = ssim_from_moments(mp, mt, vp, vt, vpt, data_range)
        out.append(np.where(full, s, np.nan))
    return np.stack(out)


def ssim(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
    win_px: int = SSIM_WIN_PX,
) -> float:
    """Mean SSIM over bands and fully valid ``win_px`` windows (box window, data range stated)."""
    m = ssim_map(pred, truth, mask, data_range, win_px)
    if not np.isfinite(m).any():
        raise ValueError(f"no fully valid {win_px}x{win_px} window to score SSIM")
    return float(np.nanmean(m))


def sam_deg(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean spectral angle in degrees between per-pixel band vectors (C >= 2).

    Insensitive to brightness (a spectrum scaled by k has angle 0) - it scores the colour.
    Pixels where either vector is all zero are skipped (the angle is undefined).
    """
    p, t, _ = _pairs(pred, truth, mask)
    if p.shape[0] < 2:
        raise ValueError("SAM needs at least two bands")
    norm = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    ok = norm > 0
    if not ok.any():
        raise ValueError("no pixel with a non-zero spectrum to score SAM")
    cos = np.clip((p * t).sum(axis=0)[ok] / norm[ok], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def best_of_n(hypotheses: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """The MultiEarth 2022 error score: per target, the MAE of the best of N hypotheses.

    ``hypotheses`` (N, C, H, W): the model's N generated images for one SAR input;
    ``targets`` (T, C, H, W): the real optical images it may be compared with (e.g. the
    clear S2 of nearby dates). Returns ``per_target`` (T,) min over N of MAE,
    ``best_index`` (T,) which hypothesis won, ``score`` = mean over targets (the challenge's
    number) and ``min`` = the best target.
    """
    hyps = np.asarray(hypotheses)
    targs = np.asarray(targets)
    if hyps.ndim != 4 or targs.ndim != 4 or hyps.shape[1:] != targs.shape[1:]:
        raise ValueError(f"need (N, C, H, W) and (T, C, H, W), got {hyps.shape}, {targs.shape}")
    errs = np.array([[mae(h, t, mask) for h in hyps] for t in targs])  # (T, N)
    per = errs.min(axis=1)
    return {
        "per_target": per.tolist(),
        "best_index": errs.argmin(axis=1).tolist(),
        "score": float(per.mean()),
        "min": float(per.min()),
    }


def region_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    regions: dict[str, np.ndarray],
    mask: np.ndarray | None = None,
) -> list[dict]:
    """MAE, RMSE and pixel count inside each named boolean region (e.g. layover, shadow).

    A region with no valid pixel gets ``pixels`` 0 and NaN scores instead of an error, so a
    table over many masks still prints.
    """
    rows = []
    for name, region in regions.items():
        m = np.asarray(region, dtype=bool)
        if mask is not None:
            m = m & np.asarray(mask, dtype=bool)
        try:
            _, _, n = _pairs(pred, truth, m)
            rows.append(
                {
                    "region": name,
                    "mae": mae(pred, truth, m),
                    "rmse": rmse(pred, truth, m),
                    "pixels": n,
                }
            )
        except ValueError:
            rows.append({"region": name, "mae": float("nan"), "rmse": float("nan"), "pixels": 0})
    return rows


def class_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    class_names: dict[int, str],
    mask: np.ndarray | None = None,
) -> list[dict]:
    """``region_scores`` per land-cover class of an integer label image (H, W)."""
    labels = np.asarray(labels)
    return region_scores(pred, truth, {name: labels == k for k, name in class_names.items()}, mask)


# --- masked gaussian SSIM (evaluate's protocol) ----------------------------------------------

#: Gaussian SSIM window: sigma 1.5 px truncated at 3.5 sigma (11 px), population covariances,
#: K1 = 0.01, K2 = 0.03: Wang et al. 2004 and scikit-image's ``gaussian_weights=True``.
SSIM_SIGMA_PX = 1.5
SSIM_TRUNCATE = 3.5


def gaussian_kernel(sigma_px: float = SSIM_SIGMA_PX, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """1-D normalised gaussian taps, radius ``int(truncate * sigma + 0.5)`` (scipy's rule)."""
    r = int(truncate * sigma_px + 0.5)
    x = np.arange(-r, r + 1, dtype="float64")
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return k / k.sum()


def gaussian_filter2d(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filter of the last two axes, zeros outside the image (callers normalise by
    the filtered weight, so the border is a renormalised window, not a padded one)."""
    r = len(kernel) // 2
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)]
    p = np.pad(np.asarray(a, "float64"), pad)
    rows = sum(kernel[i] * p[..., i : i + h, :] for i in range(len(kernel)))
    return sum(kernel[i] * rows[..., :, i : i + w] for i in range(len(kernel)))


def masked_ssim_map(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
    sigma_px: float = SSIM_SIGMA_PX,
) -> np.ndarray:
    """Gaussian-window SSIM of each band at each scored pixel, (C, H, W), NaN elsewhere.

    The window's means, variances and covariance are weighted by the gaussian over the scored
    pixels only (``mask`` and finite in both images), renormalised by their weight: a scored
    pixel next to unscored ones (a laid cloud's edge, a block's border) sees none of them.
    Scoring a cloud-removal model on the full tile instead would let the clear pixels it
    copies around the hole lift its SSIM. With every pixel scored, the map equals
    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` away from the image border."""
    pred = np.asarray(pred, "float64")
    truth = np.asarray(truth, "float64")
    ok = np.isfinite(pred).all(axis=0) & np.isfinite(truth).all(axis=0)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    k = gaussian_kernel(sigma_px)
    w = gaussian_filter2d(ok.astype("float64"), k)
    w = np.where(ok, w, np.inf)  # only scored pixels get a value
    p = np.where(ok, pred, 0.0)
    t = np.where(ok, truth, 0.0)
    mp, mt = gaussian_filter2d(p, k) / w, gaussian_filter2d(t, k) / w
    vp = gaussian_filter2d(p * p, k) / w - mp * mp
    vt = gaussian_filter2d(t * t, k) / w - mt * mt
    vpt = gaussian_filter2d(p * t, k) / w - mp * mt
    s = ssim_from_moments(mp, mt, vp, vt, vpt, data_range)
    return np.where(ok[None], s, np.nan)


def masked_ssim(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
) -> float:
    """Mean of ``masked_ssim_map`` over bands and scored pixels (NaN when none is scored)."""
    m = masked_ssim_map(pred, truth, mask, data_range)
    return float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")
