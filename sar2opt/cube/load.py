"""Load STAC items onto the shared GridSpec with stackstac (lazy, dask-backed).

stackstac gives an exact grid only when ``epsg``, ``resolution`` and ``bounds`` are all
passed, so every call takes them from one GridSpec. S2's ``CLP`` (cloud probability) is read
by ``load_clp`` on its own, as a mask: raw percent, nearest neighbour, never an optical band.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import xarray as xr

from sar2opt.cube.clean import CLP_BAND
from sar2opt.cube.clean_s1 import linear_to_db
from sar2opt.grid import GridSpec
from sar2opt.profiles import (
    LOCAL,
    PROFILES,
    CollectionProfile,
    band_scaling,
    has_band,
    nodata,
    prepare_items,
)


def group_acquisitions(items: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """Group items of one satellite pass (same day, platform and orbit direction).

    One S1 pass over an AOI can be split into several frames (items) seconds apart; they
    form one time step of the cube and mosaic. Returns ``(iso_time_of_first_frame, items)``
    sorted by time.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for it in items:
        p = it["properties"]
        key = (p["datetime"][:10], p.get("platform", ""), p.get("sat:orbit_state", ""))
        groups[key].append(it)
    out = []
    for members in groups.values():
        members = sorted(members, key=lambda i: i["properties"]["datetime"])
        out.append((members[0]["properties"]["datetime"], members))
    return sorted(out, key=lambda g: g[0])


def load_stack(
    items: Sequence[dict], grid: GridSpec, assets: Sequence[str], *, chunk_px: int = 512
) -> xr.DataArray:
    """stackstac stack of ``assets`` on ``grid``: (time, band, y, x), float32, NaN = no data."""
    import stackstac

    missing = [a for a in assets if any(a not in it.get("assets", {}) for it in items)]
    if missing:
        raise ValueError(f"assets {sorted(set(missing))} missing from some items")
    arr = stackstac.stack(
        list(items),
        assets=list(assets),
        epsg=grid.epsg,
        resolution=grid.res_m,
        bounds=grid.bounds,
        dtype="float32",
        fill_value=np.float32(np.nan),
        # scale/offset are applied by the callers (per collection): stackstac's own rescale
        # fails numpy 2's casting check for float32 output.
        rescale=False,
        chunksize=chunk_px,
        snap_bounds=False,
        xy_coords="center",
        # stackstac reads an asset that answers 404 as NaN by default: a silent hole in the
        # cube. A missing asset is an error (one line from the job kit), like in inference.
        errors_as_nodata=(),
    )
    if arr.shape[-2:] != grid.shape:  # guard the one-grid promise
        raise AssertionError(f"stackstac returned {arr.shape[-2:]}, grid is {grid.shape}")
    if arr.sizes["time"] != len(items) or arr.sizes["band"] != len(assets):
        arr = restore_dropped(arr, items, assets, chunk_px=chunk_px)
    return arr


def restore_dropped(
    arr: xr.DataArray, items: Sequence[dict], assets: Sequence[str], *, chunk_px: int = 512
) -> xr.DataArray:
    """Put back, as NaN, the items and assets stackstac dropped for lying outside the bounds.

    Callers index the result by item position (pairing, per-item scaling); a tile whose
    footprint test keeps an item whose raster misses the tile must not shift the others.
    """
    import dask.array as dsa

    kept_ids = [str(v) for v in arr["id"].values] if arr.sizes["time"] else []
    band_pos = {str(b): i for i, b in enumerate(arr["band"].values)}
    blank = dsa.full(arr.shape[-2:], np.nan, dtype="float32", chunks=chunk_px)
    rows, j = [], 0
    for it in items:
        take = j < len(kept_ids) and kept_ids[j] == it["id"]
        rows.append(
            dsa.stack(
                [arr.data[j, band_pos[a]] if take and a in band_pos else blank for a in assets]
            )
        )
        j += int(take)
    times = [
        np.datetime64(it["properties"]["datetime"].rstrip("Z").split("+")[0], "ns") for it in items
    ]
    return xr.DataArray(
        dsa.stack(rows) if rows else dsa.zeros((0, len(assets), *arr.shape[-2:]), "float32"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(times, dtype="datetime64[ns]"),
            "id": ("time", [it["id"] for it in items]),
            "band": list(assets),
            "y": arr["y"].values,
            "x": arr["x"].values,
        },
        attrs=arr.attrs,
    )


def load_sar(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    *,
    chunk_px: int = 512,
    profile: CollectionProfile | None = None,
) -> xr.DataArray:
    """Sentinel-1 backscatter in dB on ``grid``, one time step per acquisition (frames mosaicked).

    Catalog assets hold linear γ0 power (as Planetary Computer's ``sentinel-1-rtc``); the
    nodata value (-32768) and non-positive powers become NaN. With a ``profile``, assets are
    re-keyed to ``bands`` and URLs signed here, in the process that reads the pixels; a GRD
    profile is refused (radar geometry is not a map grid).
    """
    import stackstac

    if profile is not None:
        items = prepare_items(items, profile, bands)
    steps = []
    times = []
    for iso, members in group_acquisitions(items):
        stack = load_stack(members, grid, bands, chunk_px=chunk_px)
        lin = stackstac.mosaic(stack, dim="time") if stack.sizes["time"] > 1 else stack.isel(time=0)
        steps.append(lin.drop_vars([c for c in lin.coords if c not in ("band", "y", "x")]))
        times.append(np.datetime64(iso.rstrip("Z").split("+")[0], "ns"))
    if not steps:
        raise ValueError("no Sentinel-1 items to load")
    lin = xr.concat(steps, dim="time").assign_coords(time=np.array(times))
    db = linear_to_db(lin)
    db = db.transpose("time", "band", "y", "x")
    db.name = "sar"
    return db


def load_optical(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    *,
    chunk_px: int = 512,
    profile: CollectionProfile | None = None,
) -> xr.DataArray:
    """Sentinel-2 surface reflectance (0-1) on ``grid``, one time step per item.

    Reflectance = DN * scale + offset per item and band (``sar2opt.profiles.scale_offset``):
    ``raster:bands`` where the catalog gives them, else 1e-4 and, from processing baseline
    04.00 on, -1000 DN (Planetary Computer items carry no ``raster:bands``). DN 0 is no data.
    """
    profile = profile or PROFILES[(LOCAL, "sentinel-2-l2a")]
    scales, offsets = band_scaling(items, profile, bands)
    items = prepare_items(items, profile, bands)
    arr = load_stack(items, grid, bands, chunk_px=chunk_px)
    scale = xr.DataArray(np.array(scales, dtype="float32"), dims=("time", "band"))
    offset = xr.DataArray(np.array(offsets, dtype="float32"), dims=("time", "band"))
    valid = arr > 0
    scaled = arr * scale + offset
    out = xr.where(valid, scaled, np.nan).astype("float32")
    out = out.transpose("time", "band", "y", "x")
    out.name = "opt"
    return out


def load_clp(
    items: Sequence[dict],
    grid: GridSpec,
    *,
    chunk_px: int = 512,
    profile: CollectionProfile | None = None,
) -> xr.DataArray | None:
    """S2 cloud probability (S2 item, y, x) in percent on ``grid``, one plane per item in the
    order of ``load_optical`` (by time); NaN at its nodata and for items without a ``CLP``
    asset. ``None`` when no item has one: the cloud test is then the brightness test alone.

    A mask, not reflectance: no scale/offset, 0 is a value (clear), stackstac's nearest
    neighbour (never bilinear); the cloud test reads it (``clean.cloud_shadow_mask``'s ``clp``).
    """
    import dask.array as dsa

    from sar2opt.cube.window_load import by_time  # stackstac's order (lazy: no rasterio here)

    profile = profile or PROFILES[(LOCAL, "sentinel-2-l2a")]
    items = by_time(items)
    carry = [it for it in items if has_band(it, profile, CLP_BAND)]
    if not carry:
        return None
    nd = {it["id"]: nodata(profile, it, CLP_BAND) for it in carry}
    arr = load_stack(
        prepare_items(carry, profile, (CLP_BAND,)), grid, (CLP_BAND,), chunk_px=chunk_px
    )
    row = {str(i): k for k, i in enumerate(arr["id"].values)}
    blank = dsa.full(grid.shape, np.nan, dtype="float32", chunks=chunk_px)
    planes = []
    for it in items:
        k = row.get(it["id"])
        if k is None:
            planes.append(blank)
            continue
        plane = arr.data[k, 0]
        if nd[it["id"]] is not None:
            plane = dsa.where(plane == np.float32(nd[it["id"]]), np.float32(np.nan), plane)
        planes.append(plane)
    return xr.DataArray(
        dsa.stack(planes).astype("float32"),
        dims=("time", "y", "x"),
        coords={
            "id": ("time", [it["id"] for it in items]),
            "y": arr["y"].values,
            "x": arr["x"].values,
        },
        name=CLP_BAND,
    )


def load_dem(
    items: Sequence[dict],
    grid: GridSpec,
    *,
    chunk_px: int = 512,
    profile: CollectionProfile | None = None,
) -> np.ndarray:
    """Elevation (y, x) in metres on ``grid``: the DEM tiles mosaicked, NaN where none.

    The profile's nodata (Copernicus DEM: -32767) becomes NaN.
    """
    import stackstac

    profile = profile or PROFILES[(LOCAL, "cop-dem-glo-30")]
    prepared = prepare_items(items, profile, ("dem",))
    if not prepared:
        raise ValueError("no DEM items to load")
    arr = load_stack(prepared, grid, ("dem",), chunk_px=chunk_px)
    if profile.nodata is not None:
        arr = arr.where(arr != profile.nodata)
    dem = stackstac.mosaic(arr, dim="time") if arr.sizes["time"] > 1 else arr.isel(time=0)
    return np.asarray(dem.isel(band=0).values, dtype="float32")
