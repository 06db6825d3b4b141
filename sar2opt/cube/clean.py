"""Cleaning: per-pixel cloud and shadow flags for Sentinel-2.

QA60 cannot be trusted (it is all zeros on the real MultiEarth images with obvious clouds),
so the flag is a pixel test: clouds are bright AND white across the visible bands, shadows
are very dark. Thresholds come from ``CubeSpec`` and were checked on the real sample.
Where a pixel has a cloud probability (``CLP``, s2cloudless 0-100, as BioMassters ships it),
that is its cloud test (``clp_cloud``: ``CLP > CLP_CLOUD_PCT``) instead of brightness and
whiteness: snow is as bright and white as cloud, and the probability does not flag it. A
pixel without one (an item with no ``CLP`` asset, CLP's nodata) keeps the brightness test.
This module owns the CLP rule: the ingest's ``eo:cloud_cover`` and every loader that reads
the ``CLP`` asset (``cube.load.load_clp``, ``cube.window_load.read_clp``) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np

from sar2opt.ops import dilate

VISIBLE = ("B02", "B03", "B04")
CLP_BAND = "CLP"  # the S2 asset/band of cloud probability in percent: a mask, not a colour
CLP_NODATA = 255  # CLP's nodata in the catalog (uint8 COG)
CLP_CLOUD_PCT = 50.0  # cloud where CLP is above this (also the ingest's eo:cloud_cover)


def clp_cloud(clp: np.ndarray) -> np.ndarray:
    """True where a cloud probability (percent) says cloud; False where it is NaN (unknown)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(clp) > CLP_CLOUD_PCT


def cloud_shadow_mask(
    opt: np.ndarray,
    bands: Sequence[str],
    *,
    cloud_brightness: float,
    cloud_whiteness: float,
    shadow_brightness: float,
    dilate_px: int = 0,
    clp: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean (..., y, x): True where a pixel is cloud, cloud shadow or has no data.

    ``opt`` is reflectance (..., band, y, x). Brightness is the mean of B02/B03/B04;
    whiteness is min/max over them (1 = grey/white, soil and vegetation are coloured).
    Where a cloud probability is known (``clp`` (..., y, x) percent, NaN = unknown, or a
    ``CLP`` band among ``bands``) the cloud test is ``clp_cloud`` (module doc); elsewhere,
    brightness and whiteness. Shadow and no-data (NaN in a band of ``opt`` other than CLP)
    are the same either way.
    """
    bands = list(bands)
    if clp is None and CLP_BAND in bands:
        k = bands.index(CLP_BAND)
        clp = opt[..., k, :, :]
        keep = [i for i in range(len(bands)) if i != k]
        opt, bands = opt[..., keep, :, :], [bands[i] for i in keep]
    idx = [bands.index(b) for b in VISIBLE if b in bands]
    if len(idx) < 2:
        raise ValueError(f"cloud test needs at least two of {VISIBLE}, got {list(bands)}")
    # one image at a time, band by band: the same float32 operations as on the whole stack
    # (sum in band order, then / count; min/max exact), without stack-sized temporaries
    *lead, nb, h, w = opt.shape
    images = opt.reshape(-1, nb, h, w)
    probs = None if clp is None else np.broadcast_to(clp, (*lead, h, w)).reshape(-1, h, w)
    flagged = np.empty((len(images), h, w), dtype=bool)
    nodata = np.empty((len(images), h, w), dtype=bool)
    for k, img in enumerate(images):
        nan = np.isnan(img)
        nodata[k] = nan.any(axis=0)
        vis = [np.where(nan[i], 0.0, img[i]) for i in idx]
        total = vis[0] + vis[1]
        for v in vis[2:]:
            total += v
        brightness = total / np.float32(len(vis))
        known = None if probs is None else ~np.isnan(probs[k])
        if known is not None and known.all():
            cloud = clp_cloud(probs[k])
        else:
            lo, hi = reduce(np.minimum, vis), reduce(np.maximum, vis)
            whiteness = lo / np.maximum(hi, 1e-6)
            cloud = (brightness > cloud_brightness) & (whiteness > cloud_whiteness)
            if known is not None and known.any():
                cloud = np.where(known, clp_cloud(probs[k]), cloud)
        flagged[k] = cloud | (brightness < shadow_brightness)
    if dilate_px > 0:
        flagged = dilate(flagged, dilate_px)
    return (flagged | nodata).reshape(*lead, h, w)


# ---------------------------------------------------------------------------------------------
# Named Sentinel-2 cleaning steps from the published pipelines, each pure and tested.
# Pixel masks are True where a pixel is NOT usable; image filters return True to KEEP.

# SCL classes that are not clear land/water: 0 no data, 1 saturated/defective, 3 cloud shadow,
# 8 cloud medium, 9 cloud high probability, 10 thin cirrus.
SCL_INVALID = (0, 1, 3, 8, 9, 10)
QA60_OPAQUE_BIT, QA60_CIRRUS_BIT = 10, 11


def scl_mask(scl: np.ndarray, invalid: Sequence[int] = SCL_INVALID) -> np.ndarray:
    """True where the Scene Classification Layer says cloud, shadow, cirrus or no data."""
    return np.isin(np.asarray(scl), list(invalid))


def qa60_mask(qa60: np.ndarray) -> np.ndarray:
    """True where QA60 sets the opaque-cloud (10) or cirrus (11) bit."""
    q = np.asarray(qa60).astype(np.int64)
    return ((q >> QA60_OPAQUE_BIT) & 1).astype(bool) | ((q >> QA60_CIRRUS_BIT) & 1).astype(bool)


def nodata_ratio(opt: np.ndarray) -> np.ndarray:
    """Per image (..., band, y, x): fraction of pixels with no data (NaN in any band, or all 0)."""
    arr = np.asarray(opt, dtype="float64")
    missing = np.isnan(arr).any(axis=-3) | (np.nan_to_num(arr) == 0).all(axis=-3)
    return missing.mean(axis=(-2, -1))


def cloud_ratio(mask: np.ndarray) -> np.ndarray:
    """Per image (..., y, x): fraction of flagged pixels."""
    return np.asarray(mask, dtype=bool).mean(axis=(-2, -1))


def keep_ratio_zero(nodata: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """The seeds' strict rule: keep an image only when its no-data AND cloud ratios are 0."""
    return (np.asarray(nodata) == 0) & (np.asarray(cloud) == 0)


def hsv_value_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV value (max) and saturation ((max-min)/max) over the band axis (-3)."""
    rgb = np.nan_to_num(np.asarray(rgb, dtype="float64"))
    vmax = rgb.max(axis=-3)
    vmin = rgb.min(axis=-3)
    sat = np.where(vmax > 0, (vmax - vmin) / np.where(vmax > 0, vmax, 1.0), 0.0)
    return vmax, sat


def brightness_minus_saturation(rgb: np.ndarray, *, white_reflectance: float = 0.3) -> np.ndarray:
    """Per-pixel cloud score V - S: clouds are bright and colourless, land is darker or coloured.

    ``rgb`` is reflectance (..., 3, y, x); V is scaled so ``white_reflectance`` reads as 1.
    """
    v, s = hsv_value_saturation(rgb)
    return np.clip(v / white_reflectance, 0.0, 1.0) - s


def bms_cloud_mask(rgb: np.ndarray, threshold: float = 0.4, **kw: float) -> np.ndarray:
    """True where ``brightness_minus_saturation`` exceeds ``threshold`` (or no data)."""
    return (brightness_minus_saturation(rgb, **kw) > threshold) | np.isnan(rgb).any(axis=-3)


# Clean Collector (image-level stages, on DN = reflectance x 1e4 and an 8-bit rendering).
CC_PIXEL_THRESHOLD_DN = 4096
CC_RENDER_MAX_DN = 3000  # 8-bit quicklook: 0..3000 DN -> 0..255


def to_uint8(rgb_dn: np.ndarray, max_dn: float = CC_RENDER_MAX_DN) -> np.ndarray:
    """The 8-bit RGB quicklook the Clean Collector thresholds are defined on."""
    x = np.nan_to_num(np.asarray(rgb_dn, dtype="float64")) / max_dn * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def cc_cloud_pixels(qa60: np.ndarray | None, rgb_dn: np.ndarray, threshold_dn: float = 4096):
    """Stage 1 pixels: QA60 cloud bits OR any visible band above ``threshold_dn``."""
    bright = np.nan_to_num(np.asarray(rgb_dn, dtype="float64")).max(axis=-3) > threshold_dn
    return bright if qa60 is None else bright | qa60_mask(qa60)


def cc_stage_clouds(qa60, rgb_dn, threshold_dn: float = 4096, max_ratio: float = 0.0) -> bool:
    """Stage 1: keep when the QA60 + pixel-threshold cloud ratio is at most ``max_ratio``."""
    return bool(cloud_ratio(cc_cloud_pixels(qa60, rgb_dn, threshold_dn)) <= max_ratio)


def cc_stage_night(rgb8: np.ndarray, min_brightness: float = 30.0) -> bool:
    """Stage 2: keep when the mean HSV brightness (0-255) is at least ``min_brightness``."""
    v, _ = hsv_value_saturation(rgb8)
    return bool(v.mean() >= min_brightness)


def cc_stage_dark(rgb8: np.ndarray, dark_level: float = 10.0, max_frac: float = 0.10) -> bool:
    """Stage 3: keep unless more than ``max_frac`` of pixels are darker than ``dark_level``."""
    v, _ = hsv_value_saturation(rgb8)
    return bool((v < dark_level).mean() <= max_frac)


def image_features(rgb8: np.ndarray, bins: int = 8) -> np.ndarray:
    """A small hand-made image descriptor: normalised HSV value and saturation histograms.

    The Clean Collector used CNN features; pretrained weights cannot be fetched here, so this
    colour descriptor stands in (clouds: bright, colourless histograms).
    """
    v, s = hsv_value_saturation(rgb8.astype("float64") / 255.0)
    hv = np.histogram(v, bins=bins, range=(0, 1))[0]
    hs = np.histogram(s, bins=bins, range=(0, 1))[0]
    f = np.concatenate([hv, hs]).astype("float64")
    return f / max(f.sum() / 2, 1.0)


def exemplar_distance(features: np.ndarray, exemplars: np.ndarray) -> float:
    """Euclidean distance from one descriptor to the nearest cloudy exemplar."""
    ex = np.atleast_2d(np.asarray(exemplars, dtype="float64"))
    return float(np.sqrt(((ex - np.asarray(features)[None]) ** 2).sum(axis=1)).min())


def cc_stage_exemplars(
    features: np.ndarray,
    exemplars: np.ndarray,
    beta: float,
    beta_range: tuple[float, float] = (0.0, 2.0),
) -> bool:
    """Stage 4: keep when the image is farther than ``beta`` from every cloudy exemplar.

    ``beta`` must lie in ``beta_range`` (the seeds tuned it inside a fixed [min, max]).
    """
    lo, hi = beta_range
    if not lo <= beta <= hi:
        raise ValueError(f"beta {beta} outside [{lo}, {hi}]")
    return exemplar_distance(features, exemplars) > beta


def clean_collector(
    rgb_dn: np.ndarray,
    qa60: np.ndarray | None,
    exemplars: np.ndarray | None = None,
    *,
    beta: float = 0.3,
) -> tuple[bool, str]:
    """All Clean Collector stages in order; returns (keep, the stage that rejected or "kept")."""
    if not cc_stage_clouds(qa60, rgb_dn):
        return False, "clouds"
    rgb8 = to_uint8(rgb_dn)
    if not cc_stage_night(rgb8):
        return False, "night"
    if not cc_stage_dark(rgb8):
        return False, "dark"
    if exemplars is not None and len(exemplars):
        if not cc_stage_exemplars(image_features(rgb8), exemplars, beta):
            return False, "exemplar"
    return True, "kept"
