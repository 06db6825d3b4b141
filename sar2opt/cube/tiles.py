"""The tile plan of a cube build: per UTM zone its grid and the tiles that meet the AOI.

Pure planning, no catalog and no I/O, so ``--dry-run`` can plan a continent in a second.
Zones, their grids and the lattice walk are ``sar2opt.zones`` (shared with inference and the
synthetic generator). A cube tile is a lattice block with no overlap (core = tile); it reads a
``cube.cloud_dilate_px`` halo. ``tile_px`` is a multiple of the Zarr chunk, so every tile owns
whole chunks (and, with sharding, whole shards) and writers never share one.
"""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry

from sar2opt.config import CubeSpec, check_cube
from sar2opt.zones import Lattice, ZonePart, blocks_meeting, split_zones, to_grid_crs


@dataclass(frozen=True)
class ZonePlan:
    """One zone's grid, its tile lattice and the tiles that meet the AOI."""

    zone: ZonePart
    lattice: Lattice
    tiles: tuple[tuple[int, int], ...]

    @property
    def pixels(self) -> int:
        """Pixels per time step and band written by the planned tiles."""
        return sum(
            (r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in (self.lattice.core(*t) for t in self.tiles)
        )


def plan_zones(aoi: BaseGeometry, spec: CubeSpec) -> list[ZonePlan]:
    """Zones, grids and tiles of a build, from the AOI and the cube spec alone."""
    check_cube(spec)  # a spec built in code skips load_config's checks
    plans = []
    for zone in split_zones(aoi, spec.res_m, spec.epsg):
        lattice = Lattice(zone.grid, spec.tile_px)
        tiles = blocks_meeting(lattice, to_grid_crs(zone.aoi, zone.epsg))
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
            f"  {p.zone.name} (EPSG:{g.epsg}): grid {g.height} x {g.width} px at {g.res_m:g} m, "
            f"{len(p.tiles)} of {p.lattice.n_rows * p.lattice.n_cols} tiles meet the AOI, "
            f"{px / 1e9:.2f} Gpx, {px * n_bands * bytes_per_px / 1e9:.1f} GB per time step"
        )
    lines.append(
        f"total: {total_tiles} tiles, {total_px / 1e9:.2f} Gpx, "
        f"{total_px * n_bands * bytes_per_px / 1e9:.1f} GB per time step ({n_bands} float32 bands)"
    )
    return lines
