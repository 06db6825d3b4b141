"""Sentinel-1 side-looking geometry and backscatter: local incidence, layover, shadow, speckle.

Geometry is simplified to a radar looking exactly west (descending pass: the satellite flies
south, looks right) or exactly east (ascending), ignoring the ~12 degree tilt of the real ground
track, so range lines are map rows and layover/shadow can be cast along rows. The ellipsoid
incidence angle is one value per orbit (the scene is small against the 250 km swath).

Along a row, with ``u`` the ground distance away from the radar and ``z`` the elevation:

* radar shadow: the beam (direction (sin t, -cos t) in (u, z)) is blocked by nearer terrain,
  i.e. ``q = u cos t + z sin t`` is below its running maximum over nearer pixels. Locally this
  is a slope facing away from the radar steeper than 90 - t degrees.
* layover: slant range ``rho = u sin t - z cos t`` is not monotonic: some other pixel has the
  same range (and the pixel is not in shadow). Locally this is a slope facing the radar
  steeper than t degrees.
"""

from __future__ import annotations

import math

import numpy as np

FOREST, PASTURE, BARE, WATER, URBAN = 1, 2, 3, 4, 5

# gamma0 (dB) per class at the reference incidence, (VV, VH): C-band Amazon literature
# (e.g. Reiche et al. 2018, Joshi et al. 2015); urban bright from double bounce.
SIGMA0_DB: dict[int, tuple[float, float]] = {
    FOREST: (-7.0, -12.5),
    PASTURE: (-10.0, -17.0),
    BARE: (-9.0, -16.0),
    WATER: (-20.0, -26.0),
    URBAN: (-2.5, -9.5),
}
# Exponent n of the (cos theta_loc / cos theta_ref)^n angular law: volume scatterers ~1,
# rough surfaces ~2, specular water steeper.
ANGULAR_EXPONENT = {FOREST: 1.0, PASTURE: 2.0, BARE: 2.0, WATER: 3.0, URBAN: 1.0}
NOISE_FLOOR_DB = (-24.0, -29.0)  # NESZ-like floor for radar shadow (VV, VH)
LAYOVER_GAIN_DB = 5.0  # several ground patches fold into one range cell
ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRD (10 m)

ORBITS = {
    # orbit state -> (ellipsoid incidence angle at the scene, look: +1 radar east, -1 west)
    "descending": (39.0, +1),
    "ascending": (35.0, -1),
}


def cos_local_incidence(
    dz_dx: np.ndarray, dz_dy: np.ndarray, incidence_deg: float, radar_east: int
) -> np.ndarray:
    """cos of the local incidence angle for a facet with slopes dz/dx (east), dz/dy (north).

    ``radar_east`` +1: the radar is east of the ground (descending), -1: west (ascending).
    Negative values mean the facet faces away from the beam (local shadow).
    """
    t = math.radians(incidence_deg)
    norm = np.sqrt(1.0 + dz_dx * dz_dx + dz_dy * dz_dy)
    return ((-radar_east * dz_dx * math.sin(t) + math.cos(t)) / norm).astype(np.float32)


def shadow_layover(
    dem_m: np.ndarray, res_m: float, incidence_deg: float, radar_east: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (shadow, layover) masks of a DEM block (rows are range lines).

    A pixel is only classified right when the block extends at least ``halo_px`` beyond it
    toward (shadow) and on both sides (layover) along rows.
    """
    t = math.radians(incidence_deg)
    z = dem_m.astype(np.float64)
    if radar_east > 0:  # radar east: u grows westward, scan columns right to left
        z = z[:, ::-1]
    u = (np.arange(z.shape[1], dtype=np.float64) * res_m)[None, :]
    q = u * math.cos(t) + z * math.sin(t)
    prev_max = np.full_like(q, -np.inf)
    prev_max[:, 1:] = np.maximum.accumulate(q, axis=1)[:, :-1]
    shadow = q < prev_max - 1e-6
    rho = u * math.sin(t) - z * math.cos(t)
    before = np.full_like(rho, -np.inf)
    before[:, 1:] = np.maximum.accumulate(rho, axis=1)[:, :-1]
    after = np.full_like(rho, np.inf)
    after[:, :-1] = np.minimum.accumulate(rho[:, ::-1], axis=1)[:, ::-1][:, 1:]
    layover = ((rho <= before + 1e-6) | (rho >= after - 1e-6)) & ~shadow  # shadow sends nothing
    if radar_east > 0:
        shadow, layover = shadow[:, ::-1], layover[:, ::-1]
    return np.ascontiguousarray(shadow), np.ascontiguousarray(layover)


def geometry_halo_px(z_span_m: float, res_m: float, incidence_deg: float) -> int:
    """Pixels of margin along rows that make shadow/layover exact for any DEM of that span."""
    t = math.radians(incidence_deg)
    reach = z_span_m * max(math.tan(t), 1.0 / math.tan(t))
    return int(math.ceil(reach / res_m)) + 2


def angular_gain_db(cos_loc: np.ndarray, incidence_deg: float, exponent: np.ndarray) -> np.ndarray:
    """dB change of backscatter from the flat-terrain reference: 10 n log10(cos tl / cos tref)."""
    c = np.clip(cos_loc, 0.05, 1.0)
    ref = math.cos(math.radians(incidence_deg))
    return (10.0 * exponent * np.log10(c / ref)).astype(np.float32)


def from_db(db: np.ndarray) -> np.ndarray:
    return np.power(np.float32(10.0), np.asarray(db, np.float32) / np.float32(10.0))
