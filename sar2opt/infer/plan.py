"""The region plan: UTM zones, a block lattice per zone, and the ``--dry-run`` figures.

Output is written by *block*: a regular lattice of ``block_px = tile_px - overlap_px`` square
chunks. Each block is predicted from a ``tile_px`` window centred on it (``halo_px`` =
``overlap_px // 2`` of context on every side, shifted inward at the grid's edges), and only the
block (the window's core) is written. Blocks are therefore Zarr chunks: every writer owns its
chunks, nothing is accumulated for the region, and a block is the unit of the resume ledger.

Blocks are enumerated row by row from the AOI's intersection with each row strip, so a
continental AOI is counted (and streamed) without a list of all its tiles in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sar2opt.grid import GridSpec, grid_for_lonlat_bounds
from sar2opt.infer.tiles import MULTIPLE


@dataclass(frozen=True)
class BlockLattice:
    """Output blocks (= Zarr chunks) of ``block_px`` on ``grid``, read via ``tile_px`` windows."""

    grid: GridSpec
    tile_px: int
    overlap_px: int

    def __post_init__(self) -> None:
        if self.tile_px <= 0 or self.tile_px % MULTIPLE:
            raise ValueError(f"tile_px must be a positive multiple of {MULTIPLE}")
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

    def core(self, bi: int, bj: int) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of block (bi, bj), clipped to the grid (half-open)."""
        s = self.block_px
        h, w = self.grid.shape
        return bi * s, bj * s, min((bi + 1) * s, h), min((bj + 1) * s, w)

    def window(self, bi: int, bj: int) -> tuple[int, int, int, int]:
        """(row, col, height, width) read and predicted for block (bi, bj), inside the grid."""
        h, w = self.grid.shape
        r, rh = _window_1d(bi, self.block_px, self.tile_px, self.halo_px, h)
        c, cw = _window_1d(bj, self.block_px, self.tile_px, self.halo_px, w)
        return r, c, rh, cw

    def to_dict(self) -> dict:
        return {"grid": self.grid.to_dict(), "tile_px": self.tile_px, "overlap_px": self.overlap_px}

    @classmethod
    def from_dict(cls, d: dict) -> BlockLattice:
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


def blocks_by_row(
    lattice: BlockLattice, geom: BaseGeometry | None
) -> Iterator[tuple[int, np.ndarray]]:
    """Per block row ``bi``: the sorted columns ``bj`` whose core meets ``geom`` (grid CRS).

    ``None`` means every block. Works strip by strip (a row of blocks at a time): the
    intersection of the geometry with the strip gives x intervals, turned into columns.
    """
    g = lattice.grid
    s, res = lattice.block_px, g.res_m
    for bi in range(lattice.n_rows):
        if geom is None:
            yield bi, np.arange(lattice.n_cols)
            continue
        r0, _, r1, _ = lattice.core(bi, 0)
        ymax, ymin = g.bounds[3] - r0 * res, g.bounds[3] - r1 * res
        piece = geom.intersection(box(g.bounds[0], ymin, g.bounds[2], ymax))
        if piece.is_empty:
            continue
        cols = np.zeros(lattice.n_cols, bool)
        for part in getattr(piece, "geoms", [piece]):
            if part.is_empty:
                continue
            x0, _, x1, _ = part.bounds
            c0 = max(int(math.floor((x0 - g.bounds[0]) / (s * res))), 0)
            c1 = min(int(math.floor((x1 - g.bounds[0]) / (s * res))), lattice.n_cols - 1)
            cols[c0 : c1 + 1] = True
        if cols.any():
            yield bi, np.flatnonzero(cols)


def count_blocks(lattice: BlockLattice, geom: BaseGeometry | None) -> int:
    """Number of blocks ``blocks_by_row`` yields, without keeping them."""
    return sum(len(cols) for _, cols in blocks_by_row(lattice, geom))


def to_grid_crs(geom_lonlat: BaseGeometry, epsg: int, densify_deg: float = 0.05) -> BaseGeometry:
    """A lon/lat geometry in ``EPSG:epsg``, densified so long edges stay faithful."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return shapely.transform(
        geom_lonlat.segmentize(densify_deg),
        lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])),
    )


@dataclass(frozen=True)
class ZonePart:
    """The part of the AOI one output store covers: its CRS, grid and lon/lat geometry."""

    name: str
    epsg: int
    grid: GridSpec
    aoi: BaseGeometry


def utm_zone_numbers(aoi: BaseGeometry) -> list[int]:
    """UTM zone numbers (1-60) whose 6° lon band the AOI meets."""
    w, _, e, _ = aoi.bounds
    z0, z1 = int((w + 180) // 6) + 1, int((min(e, 179.999999) + 180) // 6) + 1
    out = []
    for z in range(max(z0, 1), min(z1, 60) + 1):
        lon0 = -180 + 6 * (z - 1)
        if aoi.intersects(box(lon0, -90, lon0 + 6, 90)):
            out.append(z)
    return out


def split_by_zone(aoi: BaseGeometry, res_m: float, epsg: int | None = None) -> list[ZonePart]:
    """One ``ZonePart`` per UTM zone the AOI meets, or one part when it meets a single zone.

    An AOI inside one zone (or any AOI with a fixed ``epsg``) keeps the single grid of
    ``grid_for_aoi`` (UTM zone of its centre), so small AOIs behave as before. A larger AOI
    gets one grid per zone in that zone's own CRS (south or north by the part's centre): no
    pixel is resampled across zones and areas stay true to within 0.1 %.
    """
    from sar2opt.aoi import grid_for_aoi

    zones = utm_zone_numbers(aoi)
    if epsg is not None or len(zones) <= 1:
        grid = grid_for_aoi(aoi, res_m, epsg)
        return [ZonePart(f"EPSG{grid.epsg}", grid.epsg, grid, aoi)]
    parts = []
    for z in zones:
        lon0 = -180 + 6 * (z - 1)
        part = aoi.intersection(box(lon0, -90, lon0 + 6, 90))
        if part.is_empty or part.area == 0:
            continue
        south = part.centroid.y < 0
        zepsg = (32700 if south else 32600) + z
        grid = grid_for_lonlat_bounds(part.bounds, res_m, zepsg)
        parts.append(ZonePart(f"{z:02d}{'S' if south else 'N'}", zepsg, grid, part))
    return parts


@dataclass(frozen=True)
class ZoneFigures:
    """Dry-run figures of one zone."""

    name: str
    epsg: int
    shape: tuple[int, int]
    blocks: int
    area_km2: float


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, printed by ``--dry-run`` before any work starts."""

    zones: tuple[ZoneFigures, ...]
    dates: int
    dates_note: str
    tile_px: int
    block_px: int
    sar_bands: int
    out_bands: int
    hypotheses: int
    s2_per_date: float
    opt_in_bands: int
    gpu_tiles_per_s: float

    @property
    def blocks(self) -> int:
        return sum(z.blocks for z in self.zones)

    @property
    def tasks(self) -> int:
        return self.blocks * self.dates

    @property
    def bytes_read(self) -> int:
        """float32 SAR windows plus uint16 S2 blocks (composite), uncompressed."""
        sar = self.tasks * self.tile_px**2 * self.sar_bands * 4
        s2 = self.tasks * self.s2_per_date * self.block_px**2 * self.opt_in_bands * 2
        return int(sar + s2)

    @property
    def bytes_written(self) -> int:
        """float32 optical + uint8 source + float32 uncertainty per block, uncompressed."""
        return int(self.tasks * self.block_px**2 * (self.out_bands * 4 + 1 + 4))

    @property
    def gpu_hours(self) -> float:
        return self.tasks * self.hypotheses / self.gpu_tiles_per_s / 3600.0


def zone_figures(part: ZonePart, tile_px: int, overlap_px: int) -> ZoneFigures:
    """Blocks and area of one zone, counted strip by strip."""
    geom = to_grid_crs(part.aoi, part.epsg)
    lattice = BlockLattice(part.grid, tile_px, overlap_px)
    return ZoneFigures(
        part.name, part.epsg, part.grid.shape, count_blocks(lattice, geom), geom.area / 1e6
    )


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "k", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.3g} {prefix}{unit}"
        n /= 1000.0
    return f"{n:.3g} E{unit}"


def format_plan(plan: RunPlan) -> str:
    """Human-readable plan: one line per zone, then the totals."""
    lines = [
        f"plan: {len(plan.zones)} output store(s), tile {plan.tile_px} px -> "
        f"block (chunk) {plan.block_px} px, {plan.hypotheses} hypothesis(es) per tile",
    ]
    for z in plan.zones:
        lines.append(
            f"  zone {z.name:>8} EPSG:{z.epsg}  grid {z.shape[0]}x{z.shape[1]} px  "
            f"AOI {z.area_km2:,.0f} km2  tiles {z.blocks:,}"
        )
    lines += [
        f"  dates: {plan.dates} ({plan.dates_note})",
        f"  tiles x dates: {plan.tasks:,}",
        f"  read:    {_human(plan.bytes_read)} (SAR float32 windows"
        + (f" + ~{plan.s2_per_date:g} S2 scenes/date" if plan.s2_per_date else "")
        + ")",
        f"  written: {_human(plan.bytes_written)} (uncompressed)",
        f"  GPU-hours: {plan.gpu_hours:,.1f} at {plan.gpu_tiles_per_s:g} tiles/s per GPU",
    ]
    return "\n".join(lines)


def estimate_dates(start: str, end: str, revisit_days: float) -> int:
    """Acquisitions a point sees from ``start`` to ``end`` (inclusive) at one per revisit."""
    import datetime as dt

    d0, d1 = dt.date.fromisoformat(start[:10]), dt.date.fromisoformat(end[:10])
    return max(1, int((d1 - d0).days // revisit_days) + 1)


def make_plan(
    parts: Sequence[ZonePart],
    *,
    tile_px: int,
    overlap_px: int,
    dates: int,
    dates_note: str,
    sar_bands: int,
    out_bands: int,
    hypotheses: int,
    s2_per_date: float,
    opt_in_bands: int,
    gpu_tiles_per_s: float,
) -> RunPlan:
    """Count blocks per zone and bundle the figures (no STAC reads, no Ray)."""
    zones = tuple(zone_figures(p, tile_px, overlap_px) for p in parts)
    return RunPlan(
        zones,
        dates,
        dates_note,
        tile_px,
        tile_px - overlap_px,
        sar_bands,
        out_bands,
        hypotheses,
        s2_per_date,
        opt_in_bands,
        gpu_tiles_per_s,
    )
