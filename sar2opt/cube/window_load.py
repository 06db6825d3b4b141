"""Eager loads for the tiled build: ``load.py``'s pixels, read window by window with no dask.

``sar2opt.cube.load`` builds a stackstac graph and runs dask for every call: right for a lazy,
interactive cube, but per tile of a batch build the graph and its run cost more than the
reading itself (``benchmarks/bench_cube.py``). Here each asset is read straight into numpy
through the windowed COG reader and decoded-tile cache that inference uses
(``sar2opt.infer.read``: aligned reads by COG tile, a nearest-neighbour ``WarpedVRT`` onto
the grid otherwise, as stackstac does). The values are those of ``load_sar``,
``load_optical`` and ``load_dem`` on the same grid (``tests/unit/test_cube_window_load.py``):

* items are read in the order given; frames of one acquisition and DEM tiles are mosaicked
  in time order, last on top (``stackstac.mosaic``);
* S1: linear power -> dB (``linear_to_db``), nodata and non-positive power -> NaN;
* S2: DN * scale + offset per item and band in float32, DN <= 0 and nodata -> NaN;
* S2 ``CLP``: percent as stored (a mask: no scaling, 0 is clear), nodata -> NaN, NaN for
  items without it (``load_clp``);
* DEM: the profile's nodata -> NaN before the mosaic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sar2opt.cube.clean import CLP_BAND
from sar2opt.cube.clean_s1 import linear_to_db
from sar2opt.grid import GridSpec
from sar2opt.infer.read import mosaic_last_on_top, read_asset
from sar2opt.profiles import (
    LOCAL,
    PROFILES,
    CollectionProfile,
    band_scaling,
    has_band,
    nodata,
    prepare_items,
)


def by_time(items: Sequence[dict]) -> list[dict]:
    """Stable sort by datetime (stackstac's ``sortby_date="asc"``); items without one first:
    the time order of every S2 stack the loaders here, ``cube.load`` and the composite give."""
    return sorted(items, key=lambda it: it["properties"].get("datetime") or "")


def _check_assets(items: Sequence[dict], assets: Sequence[str]) -> None:
    missing = sorted({a for it in items for a in assets if a not in it.get("assets", {})})
    if missing:
        raise ValueError(f"assets {missing} missing from some items")


def read_sar_step(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    profile: CollectionProfile | None = None,
) -> np.ndarray:
    """One acquisition's frames as (band, y, x) dB on ``grid`` (``load_sar(...).isel(time=0)``)."""
    if not items:
        raise ValueError("no Sentinel-1 items to load")
    items = prepare_items(items, profile, bands) if profile is not None else list(items)
    _check_assets(items, bands)
    items = by_time(items)
    lin = np.stack(
        [
            mosaic_last_on_top(
                np.stack([read_asset(it["assets"][b]["href"], grid) for it in items])
            )
            for b in bands
        ]
    )
    return linear_to_db(lin)


def read_optical(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    profile: CollectionProfile | None = None,
) -> np.ndarray:
    """(item, band, y, x) reflectance on ``grid``, one plane per item in the order given
    (``load_optical(...).values``)."""
    profile = profile or PROFILES[(LOCAL, "sentinel-2-l2a")]
    scales, offsets = band_scaling(items, profile, bands)
    items = prepare_items(items, profile, bands)
    _check_assets(items, bands)
    h, w = grid.shape
    out = np.empty((len(items), len(bands), h, w), dtype="float32")
    for i, it in enumerate(items):
        for j, b in enumerate(bands):
            dn = read_asset(it["assets"][b]["href"], grid)
            scaled = dn * np.float32(scales[i][j]) + np.float32(offsets[i][j])
            out[i, j] = np.where(dn > 0, scaled, np.float32(np.nan))
    return out


def read_clp(
    items: Sequence[dict], grid: GridSpec, profile: CollectionProfile | None = None
) -> np.ndarray | None:
    """(item, y, x) cloud probability in percent on ``grid``, one plane per item in the order
    given, NaN at nodata and for items without ``CLP``; ``None`` when none has it
    (``load_clp(...).values``)."""
    profile = profile or PROFILES[(LOCAL, "sentinel-2-l2a")]
    carry = [has_band(it, profile, CLP_BAND) for it in items]
    if not any(carry):
        return None
    out = np.full((len(items), *grid.shape), np.nan, dtype="float32")
    for i, it in enumerate(items):
        if carry[i]:
            nd = nodata(profile, it, CLP_BAND)
            (it,) = prepare_items([it], profile, (CLP_BAND,))
            a = read_asset(it["assets"][CLP_BAND]["href"], grid)
            if nd is not None:
                a[a == np.float32(nd)] = np.nan
            out[i] = a
    return out


def read_dem(
    items: Sequence[dict], grid: GridSpec, profile: CollectionProfile | None = None
) -> np.ndarray:
    """Elevation (y, x) in metres on ``grid``, NaN where no tile (``load_dem``)."""
    profile = profile or PROFILES[(LOCAL, "cop-dem-glo-30")]
    prepared = prepare_items(items, profile, ("dem",))
    if not prepared:
        raise ValueError("no DEM items to load")
    _check_assets(prepared, ("dem",))
    layers = []
    for it in by_time(prepared):
        a = read_asset(it["assets"]["dem"]["href"], grid)
        if profile.nodata is not None:
            a[a == profile.nodata] = np.nan
        layers.append(a)
    return mosaic_last_on_top(np.stack(layers)).astype("float32", copy=False)
