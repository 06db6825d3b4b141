"""The region plan: a block lattice per UTM zone, and the ``--dry-run`` figures.

Output is written by *block*: a regular lattice of ``block_px = tile_px - overlap_px`` square
chunks. Each block is predicted from a ``tile_px`` window centred on it (``halo_px`` =
``overlap_px // 2`` of context on every side, shifted inward at the grid's edges), and only the
block (the window's core) is written. Blocks are therefore Zarr chunks: every writer owns its
chunks, nothing is accumulated for the region, and a block is the unit of the resume ledger.

The zone split, the lattice and its row-by-row walk (a continental AOI is counted and streamed
without a list of all its blocks in memory) are ``sar2opt.zones``, shared with the cube.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sar2opt.infer.tiles import MULTIPLE
from sar2opt.zones import Lattice, ZonePart, count_blocks, to_grid_crs


@dataclass(frozen=True)
class BlockLattice(Lattice):
    """The inference lattice: ``sar2opt.zones.Lattice`` with ``tile_px`` a multiple of
    ``MULTIPLE`` (the windows the model sees). Stored in store attrs via ``to_dict``."""

    def __post_init__(self) -> None:
        if self.tile_px <= 0 or self.tile_px % MULTIPLE:
            raise ValueError(f"tile_px must be a positive multiple of {MULTIPLE}")
        super().__post_init__()


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
    #: Output time steps when they are periods (0: one per acquisition) and what they are.
    periods: int = 0
    period_note: str = ""

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
    def steps(self) -> int:
        """Output time steps: periods, or one per acquisition."""
        return self.periods or self.dates

    @property
    def bytes_written(self) -> int:
        """float32 optical + uint8 source + float32 uncertainty + int32 obs_time per block
        and output time step, uncompressed."""
        return int(self.blocks * self.steps * self.block_px**2 * (self.out_bands * 4 + 1 + 4 + 4))

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
        *(
            [f"  periods: {plan.periods} ({plan.period_note}): one output time step each"]
            if plan.periods
            else []
        ),
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
    periods: int = 0,
    period_note: str = "",
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
        periods,
        period_note,
    )
