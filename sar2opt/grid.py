"""The one pixel grid every stage shares, so cube, tiles and mosaic cannot drift apart.

A ``GridSpec`` is a CRS (EPSG code), a square pixel size in metres and bounds that are exact
multiples of that size. Shapes, transforms, coordinates and tile windows are all derived
from it; nothing else in the code base computes a transform of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class GridSpec:
    """A north-up pixel grid: EPSG code, square res_m pixels, bounds (xmin, ymin, xmax, ymax)."""

    epsg: int
    res_m: float
    bounds: Bounds

    def __post_init__(self) -> None:
        xmin, ymin, xmax, ymax = self.bounds
        if self.res_m <= 0:
            raise ValueError(f"res_m must be positive, got {self.res_m}")
        if xmax <= xmin or ymax <= ymin:
            raise ValueError(f"empty bounds {self.bounds}")
        for v in self.bounds:
            if abs(v / self.res_m - round(v / self.res_m)) > 1e-6:
                raise ValueError(f"bounds {self.bounds} are not on the {self.res_m} m lattice")
        object.__setattr__(self, "bounds", tuple(float(v) for v in self.bounds))

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def width(self) -> int:
        return round((self.bounds[2] - self.bounds[0]) / self.res_m)

    @property
    def height(self) -> int:
        return round((self.bounds[3] - self.bounds[1]) / self.res_m)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels, the order of the ``y, x`` dims."""
        return (self.height, self.width)

    @property
    def transform(self) -> Affine:
        return Affine(self.res_m, 0.0, self.bounds[0], 0.0, -self.res_m, self.bounds[3])

    def xs(self) -> np.ndarray:
        """x coordinates of pixel centres, west to east."""
        return self.bounds[0] + (np.arange(self.width) + 0.5) * self.res_m

    def ys(self) -> np.ndarray:
        """y coordinates of pixel centres, north to south."""
        return self.bounds[3] - (np.arange(self.height) + 0.5) * self.res_m

    def window_bounds(self, row: int, col: int, height: int, width: int) -> Bounds:
        """Map bounds of the pixel window starting at (row, col)."""
        xmin = self.bounds[0] + col * self.res_m
        ymax = self.bounds[3] - row * self.res_m
        return (xmin, ymax - height * self.res_m, xmin + width * self.res_m, ymax)

    def subgrid(self, row: int, col: int, height: int, width: int) -> GridSpec:
        """The grid of a pixel window of this one (same CRS and lattice)."""
        return GridSpec(self.epsg, self.res_m, self.window_bounds(row, col, height, width))

    def to_dict(self) -> dict:
        return {"epsg": self.epsg, "res_m": self.res_m, "bounds": list(self.bounds)}

    @classmethod
    def from_dict(cls, d: dict) -> GridSpec:
        return cls(epsg=int(d["epsg"]), res_m=float(d["res_m"]), bounds=tuple(d["bounds"]))

    @classmethod
    def covering(cls, epsg: int, res_m: float, bounds: Bounds) -> GridSpec:
        """Smallest grid on the ``res_m`` lattice that contains ``bounds`` (snapped outwards)."""
        xmin, ymin, xmax, ymax = bounds
        snapped = (
            math.floor(xmin / res_m + 1e-9) * res_m,
            math.floor(ymin / res_m + 1e-9) * res_m,
            math.ceil(xmax / res_m - 1e-9) * res_m,
            math.ceil(ymax / res_m - 1e-9) * res_m,
        )
        return cls(epsg=epsg, res_m=res_m, bounds=snapped)

    def __repr__(self) -> str:  # short enough for logs
        b = self.bounds
        return f"GridSpec(EPSG:{self.epsg}, {self.res_m} m, {b}, {self.height}x{self.width} px)"


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat)."""
    zone = int((lon + 180.0) // 6.0) + 1
    zone = min(max(zone, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def grid_for_lonlat_bounds(
    lonlat_bounds: Bounds, res_m: float, epsg: int | None = None
) -> GridSpec:
    """Grid in ``epsg`` (default: the UTM zone of the centre) covering lon/lat bounds."""
    from pyproj import Transformer

    west, south, east, north = lonlat_bounds
    if epsg is None:
        epsg = utm_epsg((west + east) / 2, (south + north) / 2)
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    xmin, ymin, xmax, ymax = tr.transform_bounds(west, south, east, north, densify_pts=21)
    return GridSpec.covering(epsg, res_m, (xmin, ymin, xmax, ymax))


def lonlat_bounds(grid: GridSpec) -> Bounds:
    """(west, south, east, north) in degrees of a grid, for STAC bbox searches."""
    from pyproj import Transformer

    tr = Transformer.from_crs(f"EPSG:{grid.epsg}", "EPSG:4326", always_xy=True)
    return tuple(tr.transform_bounds(*grid.bounds, densify_pts=21))
