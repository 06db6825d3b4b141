"""Synthetic terrain: a fractal DEM with rivers lying in carved valleys, from world coordinates.

Why this shape: rivers are the zero-isolines of a smooth world field (meandering lines spaced
``river_spacing_m`` apart, closed network like lowland drainage); the DEM is a regional
undulation plus fractal hills whose height is multiplied by a valley profile that goes to zero
on the rivers, so water always lies at valley bottoms. ``relief_m`` is the slope setting: ~40 m
gives the Amazon lowlands, ~2000 m steep mountains with radar layover and shadow.
All fields are pure functions of map position (see ``noise``), so any extent agrees with any
other where they overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar2opt.catalog import noise


@dataclass(frozen=True)
class TerrainSpec:
    """Elevation model parameters (metres)."""

    base_m: float = 60.0  # valley floor elevation
    relief_m: float = 40.0  # height of hills above the valley floors: the slope setting
    regional_m: float = 25.0  # long-wavelength undulation amplitude (+/-)
    hill_outer_m: float = 4000.0  # largest hill wavelength
    # Distance from a river at which hills reach full height (None: 300 m + 2 x relief, so
    # valley sides stay below ~45 degrees on average whatever the relief).
    valley_half_width_m: float | None = None
    river_spacing_m: float = 3000.0  # typical distance between rivers
    river_half_width_m: tuple[float, float] = (12.0, 40.0)  # small stream .. large river

    def __post_init__(self) -> None:
        if self.relief_m < 0 or self.regional_m < 0 or self.valley_m <= 0:
            raise ValueError(f"invalid terrain parameters: {self}")

    @property
    def valley_m(self) -> float:
        if self.valley_half_width_m is not None:
            return float(self.valley_half_width_m)
        return 300.0 + 2.0 * self.relief_m

    @property
    def z_span_m(self) -> float:
        """Upper bound of max(z) - min(z) over the whole world."""
        return 2.0 * self.regional_m + self.relief_m


VALLEY_FLOOR_M = 250.0  # flat valley floor around the smooth valley line, holds the meanders

# Field ids (streams of the world hash).
_RIVER, _RIVER_ORDER, _HILL, _REGIONAL, _LAKE = 101, 102, 103, 104, 105


@dataclass(frozen=True)
class TerrainTile:
    """Terrain fields on a block of pixel centres (rows ``ys`` north->south, cols ``xs``)."""

    dem_m: np.ndarray  # float32 elevation
    river_dist_m: np.ndarray  # float32 distance to the nearest river centre-line (approx.)
    water: np.ndarray  # bool: river or lake


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def terrain(
    xs: np.ndarray, ys: np.ndarray, res_m: float, seed: int, spec: TerrainSpec
) -> TerrainTile:
    """DEM, distance to river and water mask at pixel centres ``xs`` × ``ys`` (1-D, uniform step).

    The distance is |r|/|grad r| for the river field r (a first-order distance to its zero
    line), with the gradient from centred differences on a one-pixel margin computed here, so
    it too depends only on position.
    """
    res = float(res_m)
    xe = np.concatenate([[xs[0] - res], xs, [xs[-1] + res]])
    ye = np.concatenate([[ys[0] + res], ys, [ys[-1] - res]])

    def dist_to_zero(inner_m: float) -> np.ndarray:
        r = noise.fbm(
            xe,
            ye,
            noise.stream_key(seed, _RIVER),
            outer_m=spec.river_spacing_m,
            inner_m=inner_m,
            gain=0.45,
        )
        gy = (r[:-2, 1:-1] - r[2:, 1:-1]) / np.float32(2.0 * res)
        gx = (r[1:-1, 2:] - r[1:-1, :-2]) / np.float32(2.0 * res)
        grad = np.sqrt(gx * gx + gy * gy)
        return np.abs(r[1:-1, 1:-1]) / np.maximum(grad, np.float32(1e-7))

    # Rivers: zero line of the full field (meanders); valleys: of its two largest octaves, a
    # smooth line the river wanders around within the valley floor.
    dist = dist_to_zero(spec.river_spacing_m / 32.0)
    dist_valley = dist_to_zero(spec.river_spacing_m / 2.0)
    order = noise.fbm(
        xs,
        ys,
        noise.stream_key(seed, _RIVER_ORDER),
        outer_m=spec.river_spacing_m * 3,
        inner_m=2000.0,
    )
    lo, hi = spec.river_half_width_m
    half_w = lo + (hi - lo) * _smoothstep(0.5 + 0.35 * order)
    river = dist < half_w
    # Floodplain lakes: blobs of a medium-scale field, only near rivers.
    lake_f = noise.fbm(xs, ys, noise.stream_key(seed, _LAKE), outer_m=1200.0, inner_m=150.0)
    lake = (lake_f > 2.3) & (dist < 1200.0)
    water = river | lake

    hill = noise.fbm(
        xs,
        ys,
        noise.stream_key(seed, _HILL),
        outer_m=spec.hill_outer_m,
        inner_m=2.0 * res,
        gain=0.4,
    )
    hill = np.clip(np.float32(0.5) + np.float32(0.3) * hill, 0.0, 1.0)
    regional = noise.fbm(xs, ys, noise.stream_key(seed, _REGIONAL), outer_m=40000.0, inner_m=5000.0)
    regional = np.clip(regional / np.float32(3.0), -1.0, 1.0)
    valley = _smoothstep((dist_valley - np.float32(VALLEY_FLOOR_M)) / np.float32(spec.valley_m))
    dem = (
        np.float32(spec.base_m)
        + np.float32(spec.regional_m) * regional
        + np.float32(spec.relief_m) * hill * valley
    )
    dem = np.where(lake, np.float32(spec.base_m) + np.float32(spec.regional_m) * regional, dem)
    return TerrainTile(dem.astype(np.float32), dist.astype(np.float32), water)
