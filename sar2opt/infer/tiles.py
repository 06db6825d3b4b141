"""Tiling a region for inference and blending the tile predictions back without seams.

The generator sees fixed-size windows (multiples of 32 px). Neighbouring tiles overlap by
``overlap_px`` and their predictions are averaged with a smooth weight that is 1 in the tile
core and ramps down (never to zero) towards the tile edges, where a conv net is least
reliable. Everything here is pure numpy, so it is tested without Ray or a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sar2opt.grid import GridSpec

#: The generator down-samples 5 times; its input height and width must be multiples of this.
MULTIPLE = 32


def round_up(n: int, multiple: int = MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return int(math.ceil(n / multiple) * multiple)


@dataclass(frozen=True)
class Tile:
    """A pixel window of the region grid, plus the core it owns when tiles do not overlap.

    ``row, col, height, width`` is what is read and predicted (always inside the grid).
    ``core_*`` (half-open, region pixels) partition the grid across all tiles: useful for
    hard stitching and for counting each pixel once.
    """

    row: int
    col: int
    height: int
    width: int
    core_row0: int
    core_col0: int
    core_row1: int
    core_col1: int

    @property
    def in_height(self) -> int:
        """Height the generator sees after reflect padding to a multiple of 32."""
        return round_up(self.height)

    @property
    def in_width(self) -> int:
        """Width the generator sees after reflect padding to a multiple of 32."""
        return round_up(self.width)

    def task(self, t: int, time: str) -> TileTask:
        """This tile at acquisition ``t`` (index into the mosaic's time axis)."""
        return TileTask(t=t, time=time, **asdict(self))


@dataclass(frozen=True)
class TileTask:
    """One unit of inference work (a tile at one acquisition); ``to_dict`` is a Ray Data row."""

    t: int
    time: str
    row: int
    col: int
    height: int
    width: int
    core_row0: int
    core_col0: int
    core_row1: int
    core_col1: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TileTask:
        names = cls.__dataclass_fields__
        return cls(**{k: (str(d[k]) if k == "time" else int(d[k])) for k in names})


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Window starts covering [0, size) with ``stride``; the last window is shifted inside."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _cores(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    """Split [0, size) between windows at the middle of each overlap."""
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((b + a + tile) // 2)  # middle of the overlap [b, a + tile)
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def plan_tiles(
    grid: GridSpec, tile_px: int, overlap_px: int, aoi: BaseGeometry | None = None
) -> list[Tile]:
    """Tiles covering ``grid`` with stride ``tile_px - overlap_px``, row-major.

    Tiles are ``tile_px`` square and lie inside the grid (the last row/column is shifted
    inward, so its overlap can be larger). Along an axis shorter than ``tile_px`` a single
    tile spans the whole axis; the predictor reflect-pads it to a multiple of 32. With
    ``aoi`` (lon/lat polygon) tiles that do not touch it are dropped.
    """
    if tile_px <= 0 or tile_px % MULTIPLE:
        raise ValueError(f"tile_px must be a positive multiple of {MULTIPLE}, got {tile_px}")
    if not 0 <= overlap_px < tile_px:
        raise ValueError(f"overlap_px must be in [0, tile_px), got {overlap_px}")
    h, w = grid.shape
    stride = tile_px - overlap_px
    th, tw = min(tile_px, h), min(tile_px, w)
    rows, cols = _starts(h, th, stride), _starts(w, tw, stride)
    row_cores, col_cores = _cores(rows, th, h), _cores(cols, tw, w)
    aoi_grid = _aoi_in_grid_crs(aoi, grid) if aoi is not None else None
    tiles = []
    for r, (r0, r1) in zip(rows, row_cores, strict=True):
        for c, (c0, c1) in zip(cols, col_cores, strict=True):
            if aoi_grid is not None and not aoi_grid.intersects(
                box(*grid.window_bounds(r, c, th, tw))
            ):
                continue
            tiles.append(Tile(r, c, th, tw, r0, c0, r1, c1))
    return tiles


def _aoi_in_grid_crs(aoi: BaseGeometry, grid: GridSpec) -> BaseGeometry:
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{grid.epsg}", always_xy=True)
    # Densify first so long straight lon/lat edges stay faithful after projection.
    return shapely.transform(
        aoi.segmentize(0.01), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
    )


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1-D window: raised cosine over ``overlap`` px at both ends, 1 between, all > 0.

    Tiles narrower than two overlaps get a ramp over half their width instead.
    """
    w = np.ones(n, dtype=np.float64)
    k = min(overlap, n // 2)
    if k > 0:
        i = np.arange(k)
        up = np.sin(np.pi * (i + 0.5) / (2 * k)) ** 2  # up + reversed(up) == 1
        w[:k] = up
        w[n - k :] = up[::-1]
    return w


def blend_weights(tile_px: int | tuple[int, int], overlap_px: int) -> np.ndarray:
    """Separable (H, W) float64 weight: 1 in the core, raised-cosine ramps over the overlap.

    Two tiles overlapping by exactly ``overlap_px`` have weights summing to 1 across the
    seam, so the blend is a partition of unity; at larger overlaps it is still a weighted
    mean. Weights are strictly positive so every covered pixel has a defined value.
    """
    h, w = (tile_px, tile_px) if isinstance(tile_px, int) else tile_px
    return np.outer(_ramp(h, overlap_px), _ramp(w, overlap_px))


def accumulate(
    acc: np.ndarray,
    wsum: np.ndarray,
    pred: np.ndarray,
    weights: np.ndarray,
    row: int,
    col: int,
) -> None:
    """Add ``pred * weights`` into ``acc`` (in place) at (row, col); NaN pixels add nothing.

    ``acc``/``wsum``: (..., H, W) of the region (same shape); ``pred``: (..., h, w) of the
    tile; ``weights``: (h, w).
    """
    h, w = pred.shape[-2:]
    if weights.shape != (h, w):
        raise ValueError(f"weights {weights.shape} do not match prediction {(h, w)}")
    ok = np.isfinite(pred)
    wt = np.where(ok, weights, 0.0)
    win = (..., slice(row, row + h), slice(col, col + w))
    acc[win] += np.where(ok, pred, 0.0) * wt
    wsum[win] += wt


def finalize(acc: np.ndarray, wsum: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """Weighted mean ``acc / wsum``; NaN where no tile contributed."""
    out = np.full(acc.shape, np.nan, dtype=dtype)
    np.divide(acc, wsum, out=out, where=wsum > 0, casting="unsafe")
    return out
