"""Tile sizes for the generator: windows are multiples of ``MULTIPLE`` px.

The tiling itself is ``sar2opt.infer.plan.BlockLattice``: the shared ``sar2opt.zones.Lattice``
with ``tile_px`` a multiple of ``MULTIPLE`` (blocks = Zarr chunks, each predicted from a window
with ``overlap_px // 2`` of context on every side and written core only); the predictor pads a
window to the model's own ``stride`` (``predictor.model_stride``).
"""

from __future__ import annotations

import math

from sar2opt.config import INFER_TILE_MULTIPLE

#: Tile sizes (``infer.tile_px``) must be multiples of this: the demo U-Net down-samples 5 times.
MULTIPLE = INFER_TILE_MULTIPLE  # defined once, with the config check that enforces it


def round_up(n: int, multiple: int = MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return int(math.ceil(n / multiple) * multiple)
