"""Load STAC items onto the shared GridSpec with stackstac (lazy, dask-backed).

stackstac gives an exact grid only when ``epsg``, ``resolution`` and ``bounds`` are all
passed, so every call takes them from one GridSpec.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import xarray as xr

from sar2opt.grid import GridSpec

# Linear backscatter below this is treated as no signal before the dB conversion.
MIN_LINEAR = 1e-6


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
    )
    if arr.shape[-2:] != grid.shape:  # guard the one-grid promise
        raise AssertionError(f"stackstac returned {arr.shape[-2:]}, grid is {grid.shape}")
    return arr


def load_sar(
    items: Sequence[dict], grid: GridSpec, bands: Sequence[str], *, chunk_px: int = 512
) -> xr.DataArray:
    """Sentinel-1 backscatter in dB on ``grid``, one time step per acquisition (frames mosaicked).

    Catalog assets hold linear γ0 power (as Planetary Computer's ``sentinel-1-rtc``); the
    nodata value (-32768) and non-positive powers become NaN.
    """
    import stackstac

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


def linear_to_db(lin: xr.DataArray | np.ndarray) -> xr.DataArray | np.ndarray:
    """10·log10 of linear power; nodata (-32768), zero and negative values become NaN."""
    valid = lin > MIN_LINEAR
    safe = xr.where(valid, lin, 1.0) if isinstance(lin, xr.DataArray) else np.where(valid, lin, 1.0)
    out = 10.0 * np.log10(safe)
    if isinstance(lin, xr.DataArray):
        return xr.where(valid, out, np.nan).astype("float32")
    return np.where(valid, out, np.nan).astype("float32")


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """Inverse of ``linear_to_db``."""
    return np.power(10.0, np.asarray(db, dtype="float64") / 10.0).astype("float32")


def load_optical(
    items: Sequence[dict], grid: GridSpec, bands: Sequence[str], *, chunk_px: int = 512
) -> xr.DataArray:
    """Sentinel-2 surface reflectance (0-1) on ``grid``, one time step per item.

    DN are scaled by 1e-4 and, from processing baseline 04.00 on, offset by -1000 DN
    (Planetary Computer items carry no ``raster:bands`` scale, so it is applied here).
    DN 0 is no data.
    """
    arr = load_stack(items, grid, bands, chunk_px=chunk_px)
    scale = np.array([_s2_scale_offset(it, bands)[0] for it in items], dtype="float32")
    offset = np.array([_s2_scale_offset(it, bands)[1] for it in items], dtype="float32")
    valid = arr > 0
    scaled = arr * xr.DataArray(scale, dims="time") + xr.DataArray(offset, dims="time")
    out = xr.where(valid, scaled, np.nan).astype("float32")
    out = out.transpose("time", "band", "y", "x")
    out.name = "opt"
    return out


def _s2_scale_offset(item: dict, bands: Sequence[str]) -> tuple[float, float]:
    """Reflectance = DN * scale + offset, from ``raster:bands`` or the processing baseline."""
    rb = (item["assets"][bands[0]].get("raster:bands") or [{}])[0]
    if "scale" in rb:
        return float(rb["scale"]), float(rb.get("offset", 0.0))
    return 1e-4, 1e-4 * _s2_offset_dn(item)


def _s2_offset_dn(item: dict) -> float:
    baseline = str(item["properties"].get("s2:processing_baseline", "00.00"))
    try:
        return -1000.0 if float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0
