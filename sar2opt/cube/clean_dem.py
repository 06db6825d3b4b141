"""DEM preparation: normalisation, slope/aspect, and where radar geometry corrupts S1.

Sentinel-1 is side-looking: slopes facing the sensor are compressed (foreshortening) or even
folded over (layover), slopes facing away may be hidden (shadow). Those pixels carry no usable
backscatter; masks come from the DEM and the acquisition geometry (incidence angle and the
azimuth the radar looks towards).
"""

from __future__ import annotations

import numpy as np


def normalise_by_max(dem_m: np.ndarray) -> np.ndarray:
    """Elevation divided by the maximum elevation of the tile (the seeds' DEM channel)."""
    dem = np.asarray(dem_m, dtype="float64")
    top = np.nanmax(dem)
    if not np.isfinite(top) or top <= 0:
        raise ValueError(f"cannot normalise a DEM whose maximum is {top}")
    return (dem / top).astype("float32")


def slope_aspect(dem_m: np.ndarray, res_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees from horizontal) and aspect (degrees clockwise from north, the direction
    the slope faces, i.e. downhill) of a north-up DEM with square ``res_m`` pixels."""
    dem = np.asarray(dem_m, dtype="float64")
    dz_drow, dz_dcol = np.gradient(dem, res_m)
    dz_dn, dz_de = -dz_drow, dz_dcol  # rows go south
    slope = np.degrees(np.arctan(np.hypot(dz_de, dz_dn)))
    aspect = np.degrees(np.arctan2(-dz_de, -dz_dn)) % 360.0  # downhill direction
    return slope.astype("float32"), aspect.astype("float32")


def range_slope_deg(
    slope_deg: np.ndarray, aspect_deg: np.ndarray, look_azimuth_deg: float
) -> np.ndarray:
    """Terrain slope in the range plane, positive where the slope faces the radar.

    The radar looks towards ``look_azimuth_deg`` (heading + 90 for right-looking S1), so a
    slope faces it when its aspect points back, to ``look_azimuth_deg + 180``.
    """
    facing = np.radians(np.asarray(aspect_deg) - (look_azimuth_deg + 180.0))
    return np.degrees(np.arctan(np.tan(np.radians(slope_deg)) * np.cos(facing)))


def radar_geometry_masks(
    dem_m: np.ndarray, res_m: float, incidence_deg: float, look_azimuth_deg: float
) -> dict[str, np.ndarray]:
    """Active layover, foreshortening and shadow masks (y, x) from local slope geometry.

    With α the range slope facing the radar and θ the incidence angle:
    layover α > θ; foreshortening 0 < α ≤ θ; shadow -α > 90° - θ. Passive layover/shadow
    cast by distant peaks (ray tracing along range) is not modelled.
    """
    slope, aspect = slope_aspect(dem_m, res_m)
    # 1e-4 deg rounding: float32 aspects leave ~1e-6 deg of range slope on cross-range planes
    alpha = np.round(range_slope_deg(slope, aspect, look_azimuth_deg), 4)
    return {
        "layover": alpha > incidence_deg,
        "foreshortening": (alpha > 0) & (alpha <= incidence_deg),
        "shadow": -alpha > 90.0 - incidence_deg,
        "local_incidence_deg": (incidence_deg - alpha).astype("float32"),
    }
