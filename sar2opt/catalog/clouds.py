"""Clouds for synthetic Sentinel-2: a fractal cover field, shadows cast along the sun direction.

Cloud opacity at a place and date is a fixed function of map position (so tiles agree); a
target cover fraction becomes a fixed threshold on that field (``noise.fbm_threshold``). The
shadow on the ground at (x, y) is the opacity of the cloud up-sun of it, at
``h * tan(zenith)`` metres toward the sun's azimuth, ``h`` the cloud-base height.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from sar2opt.catalog import noise

CLOUD_OUTER_M = 3000.0
CLOUD_INNER_M = 20.0
CLOUD_GAIN = 0.62  # rough, cloud-like spectrum
CLOUD_SOFTNESS = 0.5  # field units over which opacity goes 0 -> 1

SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 3, 8, 9, 10
QA60_OPAQUE, QA60_CIRRUS = 1 << 10, 1 << 11


def sun_angles(lon: float, lat: float, when: datetime) -> tuple[float, float]:
    """(zenith, azimuth clockwise from north) in degrees, NOAA low-accuracy formulas (~0.5 deg)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2.0 * math.pi / 365.0 * (doy - 1 + (hours - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    tst = hours * 60.0 + eqtime + 4.0 * lon  # true solar time, minutes
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_z = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cos_z)))
    # Azimuth from north, clockwise.
    az = math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    azimuth = (math.degrees(az) + 180.0) % 360.0
    return math.degrees(zen), azimuth


def shadow_offset_m(
    zenith_deg: float, azimuth_deg: float, cloud_height_m: float
) -> tuple[float, float]:
    """(dx east, dy north) from a ground point to the cloud that shades it (toward the sun)."""
    d = cloud_height_m * math.tan(math.radians(min(zenith_deg, 80.0)))
    a = math.radians(azimuth_deg)
    return d * math.sin(a), d * math.cos(a)


def cloud_field(xs: np.ndarray, ys: np.ndarray, key: np.uint64) -> np.ndarray:
    """The raw cloud field (unit std) for one date at pixel centres ``xs`` × ``ys``."""
    return noise.fbm(xs, ys, key, outer_m=CLOUD_OUTER_M, inner_m=CLOUD_INNER_M, gain=CLOUD_GAIN)


def opacity(field: np.ndarray, cover: float) -> np.ndarray:
    """Cloud opacity in [0, 1] for a target cover fraction: exactly 0 outside clouds."""
    if cover <= 0.0:
        return np.zeros(field.shape, np.float32)
    thr = noise.fbm_threshold(cover, CLOUD_OUTER_M, CLOUD_INNER_M, CLOUD_GAIN)
    # Cover counts pixels with opacity >= 0.02 (flagged as cloud), i.e. field > thr.
    x = np.clip((field - np.float32(thr)) / np.float32(CLOUD_SOFTNESS) + np.float32(0.08), 0, 1)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def scl_codes(ground_scl: np.ndarray, alpha: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """SCL from the ground classes and the exact cloud/shadow opacities (honest flags).

    Opacity >= 0.5: high-probability cloud (9); >= 0.02: medium (8); any other non-zero
    opacity: thin cirrus (10); cloud-free but shaded: shadow (3). So wherever SCL says a ground
    class, the image equals the cloud-free truth.
    """
    scl = ground_scl.copy()
    scl[shadow > 0] = SCL_SHADOW
    scl[alpha > 0] = SCL_CIRRUS
    scl[alpha >= 0.02] = SCL_CLOUD_MED
    scl[alpha >= 0.5] = SCL_CLOUD_HIGH
    return scl


def qa60_bits(alpha: np.ndarray) -> np.ndarray:
    """A truthful QA60 (bit 10 opaque, bit 11 cirrus), used when QA60 is asked to be reliable."""
    qa = np.zeros(alpha.shape, np.uint16)
    qa[alpha > 0] = QA60_CIRRUS
    qa[alpha >= 0.5] = QA60_OPAQUE
    return qa
