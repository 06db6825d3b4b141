"""UTM zones and block lattices: where an AOI is cut, what each part is called, how it is tiled.

One owner for what the cube build (``cube.tiles``), inference (``infer.plan``) and the synthetic
generator (``catalog.synthetic``) must agree on, so a rule changes in one place:

* **Zone test.** A UTM zone (6° of longitude) counts when the lon/lat AOI's part in it has
  area > 0; an AOI that only touches a zone edge along a line stays in one zone.
* **Zone split.** An AOI in one zone (or any AOI with a fixed ``epsg``) keeps the single grid
  of ``grid_for_aoi`` (UTM zone of its bbox centre), so small AOIs keep the grid they always
  had. An AOI across zones gets one grid per zone, in that zone's CRS (south when the part's
  centroid is south of the equator), covering only its part: no pixel is resampled across
  zones and areas stay true to within 0.1 %.
* **Zone name.** ``zone_name(32721) == "21S"`` (two digits and the hemisphere), or
  ``EPSG<code>`` for a CRS that is not WGS84 UTM; store stems and item-id suffixes use it.
* **Lattice.** ``block_px = tile_px - overlap_px`` squares (blocks) from the grid's north-west
  corner, edge blocks clipped. A block's ``core`` is what it writes; its ``window`` is the
  ``tile_px`` square read to predict it (``halo_px = overlap_px // 2`` of context a side,
  shifted inward at the grid's edges); ``halo`` is the core grown by any margin, clipped
  (what a neighbourhood filter reads). The cube's tiles are blocks with ``overlap_px = 0``.
* **Block test.** A block counts when the AOI's part in its core has area > 0, found strip by
  strip (one intersection per block row), so a continent is walked without a list of blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sar2opt.aoi import grid_for_aoi
from sar2opt.grid import GridSpec, grid_for_lonlat_bounds

ZONE_DEG = 6.0  # width of a UTM zone in longitude
UTM_NORTH, UTM_SOUTH = 32600, 32700  # WGS84 UTM EPSG codes are these + zone number (1-60)

Window = tuple[int, int, int, int]  # (row, col, height, width) in pixels of a grid
Core = tuple[int, int, int, int]  # (row0, col0, row1, col1), half-open, in pixels of a grid


# ----------------------------------------------------------------------------------- zones


def zone_lon_band(zone: int) -> BaseGeometry:
    """The lon/lat box of UTM zone ``zone`` (1-60)."""
    lon0 = -180.0 + ZONE_DEG * (zone - 1)
    return box(lon0, -90.0, lon0 + ZONE_DEG, 90.0)


def utm_zone_numbers(aoi: BaseGeometry) -> list[int]:
    """UTM zone numbers (1-60) in which the lon/lat AOI has area (the zone test)."""
    w, _, e, _ = aoi.bounds
    z0 = int((w + 180.0) // ZONE_DEG) + 1
    z1 = int((min(e, 179.999999) + 180.0) // ZONE_DEG) + 1
    return [
        z for z in range(max(z0, 1), min(z1, 60) + 1) if aoi.intersection(zone_lon_band(z)).area > 0
    ]


def zone_epsg(zone: int, part: BaseGeometry) -> int:
    """EPSG code of UTM zone ``zone`` for an AOI part: south when its centroid is."""
    return (UTM_SOUTH if part.centroid.y < 0 else UTM_NORTH) + zone


def zone_name(epsg: int) -> str:
    """The one name of a zone, for store stems, ``zone`` attrs, logs and item-id suffixes:
    ``21S`` for EPSG:32721, ``09N`` for EPSG:32609, ``EPSG3857`` for any other CRS."""
    hemi = {UTM_NORTH // 100: "N", UTM_SOUTH // 100: "S"}.get(epsg // 100)
    if hemi is None or not 1 <= epsg % 100 <= 60:
        return f"EPSG{epsg}"
    return f"{epsg % 100:02d}{hemi}"


def central_lon(epsg: int) -> float:
    """Central meridian of a UTM zone EPSG (326zz / 327zz); 0 for other codes."""
    zone = epsg % 100
    return -183.0 + ZONE_DEG * zone if epsg // 100 in (326, 327) else 0.0


@dataclass(frozen=True)
class ZonePart:
    """The part of the AOI one store covers: its grid (and CRS) and its lon/lat geometry."""

    grid: GridSpec
    aoi: BaseGeometry

    @property
    def epsg(self) -> int:
        return self.grid.epsg

    @property
    def name(self) -> str:
        return zone_name(self.grid.epsg)


def split_zones(aoi: BaseGeometry, res_m: float, epsg: int | None = None) -> list[ZonePart]:
    """One ``ZonePart`` per UTM zone in which the lon/lat AOI has area; a single part (the
    ``grid_for_aoi`` grid) for an AOI in one zone or a fixed ``epsg``."""
    zones = utm_zone_numbers(aoi)
    if epsg is not None or len(zones) <= 1:
        return [ZonePart(grid_for_aoi(aoi, res_m, epsg), aoi)]
    parts = []
    for z in zones:
        part = aoi.intersection(zone_lon_band(z))
        grid = grid_for_lonlat_bounds(part.bounds, res_m, zone_epsg(z, part))
        parts.append(ZonePart(grid, part))
    return parts


def to_grid_crs(geom_lonlat: BaseGeometry, epsg: int, densify_deg: float = 0.05) -> BaseGeometry:
    """A lon/lat geometry in ``EPSG:epsg``, densified so long edges stay faithful."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return shapely.transform(
        geom_lonlat.segmentize(densify_deg),
        lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])),
    )


# --------------------------------------------------------------------------------- lattice


@dataclass(frozen=True)
class Lattice:
    """Blocks of ``block_px = tile_px - overlap_px`` on ``grid``, each read via a ``tile_px``
    window; ``overlap_px = 0`` gives plain ``tile_px`` tiles (the cube's)."""

    grid: GridSpec
    tile_px: int
    overlap_px: int = 0

    def __post_init__(self) -> None:
        if self.tile_px <= 0:
            raise ValueError(f"tile_px must be positive, got {self.tile_px}")
        if not 0 <= self.overlap_px < self.tile_px:
            raise ValueError(f"overlap_px must be in [0, tile_px), got {self.overlap_px}")

    @property
    def block_px(self) -> int:
        return self.tile_px - self.overlap_px

    @property
    def halo_px(self) -> int:
        return self.overlap_px // 2

    @property
    def n_rows(self) -> int:
        return math.ceil(self.grid.height / self.block_px)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.grid.width / self.block_px)

    def core(self, bi: int, bj: int) -> Core:
        """(row0, col0, row1, col1) of block (bi, bj), clipped to the grid (half-open)."""
        s = self.block_px
        h, w = self.grid.shape
        r0, c0 = bi * s, bj * s
        if not (0 <= r0 < h and 0 <= c0 < w):
            raise IndexError(f"block ({bi}, {bj}) is outside a {self.n_rows}x{self.n_cols} lattice")
        return r0, c0, min(r0 + s, h), min(c0 + s, w)

    def window(self, bi: int, bj: int) -> Window:
        """(row, col, height, width) read and predicted for block (bi, bj), inside the grid."""
        h, w = self.grid.shape
        r, rh = _window_1d(bi, self.block_px, self.tile_px, self.halo_px, h)
        c, cw = _window_1d(bj, self.block_px, self.tile_px, self.halo_px, w)
        return r, c, rh, cw

    def halo(self, bi: int, bj: int, margin_px: int) -> Window:
        """(row, col, height, width) of the core grown by ``margin_px`` on every side, clipped
        to the grid: what a block reads so neighbourhood filters (cloud dilation) see what a
        whole-grid run sees."""
        r0, c0, r1, c1 = self.core(bi, bj)
        gh, gw = self.grid.shape
        top, left = max(r0 - margin_px, 0), max(c0 - margin_px, 0)
        bottom, right = min(r1 + margin_px, gh), min(c1 + margin_px, gw)
        return top, left, bottom - top, right - left

    def to_dict(self) -> dict:
        return {"grid": self.grid.to_dict(), "tile_px": self.tile_px, "overlap_px": self.overlap_px}

    @classmethod
    def from_dict(cls, d: dict) -> Lattice:
        return cls(GridSpec.from_dict(d["grid"]), int(d["tile_px"]), int(d["overlap_px"]))


def _window_1d(b: int, block: int, tile: int, halo: int, size: int) -> tuple[int, int]:
    """Start and length of the window of block ``b`` along an axis of ``size`` px.

    The window is ``tile`` long, starts ``halo`` before the block and is shifted inward at
    the axis ends; an axis shorter than ``tile`` is read whole (the predictor pads it).
    """
    if size <= tile:
        return 0, size
    start = min(max(b * block - halo, 0), size - tile)
    return start, tile


def blocks_by_row(lattice: Lattice, geom: BaseGeometry | None) -> Iterator[tuple[int, np.ndarray]]:
    """Per block row ``bi``: the sorted columns ``bj`` whose core meets ``geom`` (grid CRS)
    with area > 0; ``None`` means every block. Rows without such a block are skipped.

    The geometry cut to a row strip gives x intervals (one per piece), turned into columns;
    a column inside a hole's x interval may be kept, never one the geometry meets missed.
    """
    g = lattice.grid
    x_west, y_north = g.bounds[0], g.bounds[3]
    span = lattice.block_px * g.res_m
    for bi in range(lattice.n_rows):
        if geom is None:
            yield bi, np.arange(lattice.n_cols)
            continue
        r0, _, r1, _ = lattice.core(bi, 0)
        strip = box(x_west, y_north - r1 * g.res_m, g.bounds[2], y_north - r0 * g.res_m)
        piece = geom.intersection(strip)
        cols = np.zeros(lattice.n_cols, bool)
        for part in getattr(piece, "geoms", [piece]):
            if part.is_empty or part.area == 0:
                continue
            x0, _, x1, _ = part.bounds
            c0 = max(math.floor((x0 - x_west) / span), 0)
            c1 = min(math.ceil((x1 - x_west) / span) - 1, lattice.n_cols - 1)
            cols[c0 : c1 + 1] = True
        if cols.any():
            yield bi, np.flatnonzero(cols)


def blocks_meeting(lattice: Lattice, geom: BaseGeometry | None) -> list[tuple[int, int]]:
    """``blocks_by_row`` as a list of (bi, bj), row by row."""
    return [(bi, int(bj)) for bi, cols in blocks_by_row(lattice, geom) for bj in cols]


def count_blocks(lattice: Lattice, geom: BaseGeometry | None) -> int:
    """Number of blocks ``blocks_by_row`` yields, without keeping them."""
    return sum(len(cols) for _, cols in blocks_by_row(lattice, geom))
