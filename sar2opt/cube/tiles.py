"""The tile plan of a cube build: UTM zones, one grid per zone, a lattice of fixed tiles.

Pure planning, no catalog and no I/O, so ``--dry-run`` can plan a continent in a second.
An AOI inside one UTM zone keeps the single grid ``build_cube`` uses (the zone of its centre);
an AOI across zones gets one grid per zone, in that zone's own CRS (north or south by the
centroid of its part), covering only its part. Each zone's grid is cut into ``tile_px``
squares aligned to its origin; ``tile_px`` is a multiple of the Zarr chunk, so every tile owns
whole chunks (and, with sharding, whole shards) and writers never share one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sar2opt.aoi import grid_for_aoi
from sar2opt.config import CubeSpec
from sar2opt.errors import ConfigError
from sar2opt.grid import GridSpec, grid_for_lonlat_bounds

Window = tuple[int, int, int, int]  # (row, col, height, width) in pixels of a grid


@dataclass(frozen=True)
class ZoneGrid:
    """The part of the AOI one store covers: its grid (and CRS) and its lon/lat geometry."""

    grid: GridSpec
    aoi: BaseGeometry

    @property
    def epsg(self) -> int:
        return self.grid.epsg

    @property
    def name(self) -> str:
        """Store name stem, e.g. ``zone=32721`` (hive style: the key is the EPSG code)."""
        return f"zone={self.grid.epsg}"


def utm_zone_numbers(aoi: BaseGeometry) -> list[int]:
    """UTM zone numbers (1-60) whose 6° longitude band the lon/lat AOI meets (with area)."""
    w, _, e, _ = aoi.bounds
    z0 = int((w + 180.0) // 6.0) + 1
    z1 = int((min(e, 179.999999) + 180.0) // 6.0) + 1
    out = []
    for z in range(max(z0, 1), min(z1, 60) + 1):
        lon0 = -180.0 + 6.0 * (z - 1)
        if aoi.intersection(box(lon0, -90.0, lon0 + 6.0, 90.0)).area > 0:
            out.append(z)
    return out


def split_zones(aoi: BaseGeometry, res_m: float, epsg: int | None = None) -> list[ZoneGrid]:
    """One ``ZoneGrid`` per UTM zone the AOI meets; one (``grid_for_aoi``) for a single zone
    or a fixed ``epsg``, so small AOIs get exactly the grid they always had."""
    zones = utm_zone_numbers(aoi)
    if epsg is not None or len(zones) <= 1:
        return [ZoneGrid(grid_for_aoi(aoi, res_m, epsg), aoi)]
    out = []
    for z in zones:
        lon0 = -180.0 + 6.0 * (z - 1)
        part = aoi.intersection(box(lon0, -90.0, lon0 + 6.0, 90.0))
        zepsg = (32700 if part.centroid.y < 0 else 32600) + z
        out.append(ZoneGrid(grid_for_lonlat_bounds(part.bounds, res_m, zepsg), part))
    return out


@dataclass(frozen=True)
class TileLattice:
    """``tile_px`` squares over ``grid`` from its north-west corner; edge tiles are clipped."""

    grid: GridSpec
    tile_px: int

    def __post_init__(self) -> None:
        if self.tile_px <= 0:
            raise ValueError(f"tile_px must be positive, got {self.tile_px}")

    @property
    def n_rows(self) -> int:
        return math.ceil(self.grid.height / self.tile_px)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.grid.width / self.tile_px)

    def window(self, row: int, col: int) -> Window:
        """(row, col, height, width) in pixels of tile (row, col), clipped to the grid."""
        h, w = self.grid.shape
        r0, c0 = row * self.tile_px, col * self.tile_px
        if not (0 <= r0 < h and 0 <= c0 < w):
            raise IndexError(
                f"tile ({row}, {col}) is outside a {self.n_rows}x{self.n_cols} lattice"
            )
        return r0, c0, min(self.tile_px, h - r0), min(self.tile_px, w - c0)

    def read_window(self, row: int, col: int, halo_px: int) -> Window:
        """The tile grown by ``halo_px`` on every side, clipped to the grid: what a tile reads
        so neighbourhood filters (cloud dilation) see what a whole-grid build sees."""
        r0, c0, h, w = self.window(row, col)
        gh, gw = self.grid.shape
        top, left = max(r0 - halo_px, 0), max(c0 - halo_px, 0)
        bottom, right = min(r0 + h + halo_px, gh), min(c0 + w + halo_px, gw)
        return top, left, bottom - top, right - left


def to_grid_crs(geom_lonlat: BaseGeometry, epsg: int, densify_deg: float = 0.05) -> BaseGeometry:
    """A lon/lat geometry in ``EPSG:epsg``, densified so long edges stay faithful."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return shapely.transform(
        geom_lonlat.segmentize(densify_deg),
        lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])),
    )


def tiles_meeting(lattice: TileLattice, geom: BaseGeometry | None) -> list[tuple[int, int]]:
    """Tiles (row, col) whose area meets ``geom`` (in the grid's CRS); ``None``: all tiles.

    Row strip by row strip: the geometry cut to a strip gives x intervals, turned into
    columns, so a continent costs one intersection per tile row, not one per tile.
    """
    g, t = lattice.grid, lattice.tile_px
    out: list[tuple[int, int]] = []
    for row in range(lattice.n_rows):
        if geom is None:
            out += [(row, col) for col in range(lattice.n_cols)]
            continue
        r0, _, h, _ = lattice.window(row, 0)
        ymax = g.bounds[3] - r0 * g.res_m
        strip = box(g.bounds[0], ymax - h * g.res_m, g.bounds[2], ymax)
        piece = geom.intersection(strip)
        cols = np.zeros(lattice.n_cols, bool)
        for part in getattr(piece, "geoms", [piece]):
            if part.is_empty or part.area == 0:
                continue
            x0, _, x1, _ = part.bounds
            c0 = max(math.floor((x0 - g.bounds[0]) / (t * g.res_m)), 0)
            c1 = min(math.ceil((x1 - g.bounds[0]) / (t * g.res_m)) - 1, lattice.n_cols - 1)
            cols[c0 : c1 + 1] = True
        out += [(row, int(c)) for c in np.flatnonzero(cols)]
    return out


@dataclass(frozen=True)
class ZonePlan:
    """One zone's grid, its tile lattice and the tiles that meet the AOI."""

    zone: ZoneGrid
    lattice: TileLattice
    tiles: tuple[tuple[int, int], ...]

    @property
    def pixels(self) -> int:
        """Pixels per time step and band written by the planned tiles."""
        return sum(
            self.lattice.window(r, c)[2] * self.lattice.window(r, c)[3] for r, c in self.tiles
        )


def check_tiling(spec: CubeSpec) -> None:
    """Tiles must own whole chunks: ``tile_px`` a positive multiple of ``chunk_px``."""
    if spec.chunk_px <= 0 or spec.tile_px <= 0 or spec.tile_px % spec.chunk_px:
        raise ConfigError(
            f"cube.tile_px ({spec.tile_px}) must be a positive multiple of cube.chunk_px "
            f"({spec.chunk_px}) so that no two tiles write one Zarr chunk"
        )
    if spec.cpus_per_tile <= 0:
        raise ConfigError(f"cube.cpus_per_tile must be > 0, got {spec.cpus_per_tile}")


def plan_zones(aoi: BaseGeometry, spec: CubeSpec) -> list[ZonePlan]:
    """Zones, grids and tiles of a build, from the AOI and the cube spec alone."""
    check_tiling(spec)
    plans = []
    for zone in split_zones(aoi, spec.res_m, spec.epsg):
        lattice = TileLattice(zone.grid, spec.tile_px)
        tiles = tiles_meeting(lattice, to_grid_crs(zone.aoi, zone.epsg))
        plans.append(ZonePlan(zone, lattice, tuple(tiles)))
    return plans


def format_plan(plans: list[ZonePlan], n_bands: int, *, bytes_per_px: int = 4) -> list[str]:
    """The ``--dry-run`` table: per zone its grid, tiles and pixels; sizes per time step."""
    lines = [
        f"{len(plans)} zone(s), tiles of {plans[0].lattice.tile_px} px" if plans else "no zones"
    ]
    total_tiles = total_px = 0
    for p in plans:
        g, px = p.zone.grid, p.pixels
        total_tiles += len(p.tiles)
        total_px += px
        lines.append(
            f"  {p.zone.name}: grid {g.height} x {g.width} px at {g.res_m:g} m, "
            f"{len(p.tiles)} of {p.lattice.n_rows * p.lattice.n_cols} tiles meet the AOI, "
            f"{px / 1e9:.2f} Gpx, {px * n_bands * bytes_per_px / 1e9:.1f} GB per time step"
        )
    lines.append(
        f"total: {total_tiles} tiles, {total_px / 1e9:.2f} Gpx, "
        f"{total_px * n_bands * bytes_per_px / 1e9:.1f} GB per time step ({n_bands} float32 bands)"
    )
    return lines
