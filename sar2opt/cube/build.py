"""Build an analysis-ready cube: S1 in dB + paired cloud-free S2 + clear flag, on one grid.

One time step per Sentinel-1 acquisition. Its optical bands are a per-pixel composite of
the clear S2 observations within ±``max_dt_days`` (nearest first), so training sees every
clear pixel near the radar date instead of one whole, often cloudy, image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr
from shapely.geometry.base import BaseGeometry

from sar2opt.aoi import grid_for_aoi
from sar2opt.config import CatalogSpec, CubeSpec, config_to_dict
from sar2opt.cube.align import composite_nearest_clear, pair_s1_s2
from sar2opt.cube.clean import cloud_shadow_mask
from sar2opt.cube.load import group_acquisitions, load_optical, load_sar
from sar2opt.grid import GridSpec
from sar2opt.provenance import provenance
from sar2opt.stac import search_aoi, search_s1

CLEAR_BAND = "clear"


@dataclass(frozen=True)
class CubeQuery:
    """What a cube was built from: the AOI's bounds and the date range."""

    bbox_lonlat: tuple[float, float, float, float]
    start: str
    end: str


def build_cube(
    aoi: BaseGeometry,
    start: str,
    end: str,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    log=print,
) -> xr.Dataset:
    """Search, load, clean and pair; returns a Dataset with variable ``cube`` (time, band, y, x)."""
    grid = grid_for_aoi(aoi, spec.res_m, spec.epsg)
    query = CubeQuery(tuple(round(v, 6) for v in aoi.bounds), start, end)
    log(f"grid: {grid}")
    s1_items = search_s1(catalog, aoi, start, end)
    pad = np.timedelta64(int(spec.max_dt_days * 86400), "s")
    s2_start = str((np.datetime64(start) - pad).astype("datetime64[D]"))
    s2_end = str((np.datetime64(end) + pad).astype("datetime64[D]"))
    s2_items = search_aoi(catalog, catalog.s2_collection, aoi, s2_start, s2_end)
    acquisitions = group_acquisitions(s1_items)
    log(
        f"found {len(acquisitions)} S1 acquisitions ({len(s1_items)} items), "
        f"{len(s2_items)} S2 items"
    )

    sar = load_sar(s1_items, grid, catalog.sar_bands, chunk_px=spec.chunk_px).compute()
    nt, _, h, w = sar.shape
    n_opt = len(catalog.opt_bands)
    opt_out = np.full((nt, n_opt, h, w), np.nan, dtype="float32")
    clear_out = np.zeros((nt, h, w), dtype="float32")
    pairs_meta: list[list[str]] = [[] for _ in range(nt)]
    if s2_items:
        opt = load_optical(s2_items, grid, catalog.opt_bands, chunk_px=spec.chunk_px).compute()
        flagged = cloud_shadow_mask(
            opt.values,
            catalog.opt_bands,
            cloud_brightness=spec.cloud_brightness,
            cloud_whiteness=spec.cloud_whiteness,
            shadow_brightness=spec.shadow_brightness,
            dilate_px=spec.cloud_dilate_px,
        )
        clear = ~flagged
        for i, s2_frac in enumerate(clear.mean(axis=(1, 2))):
            log(f"  S2 {s2_items[i]['id']}: {100 * s2_frac:.0f}% clear")
        s2_times = [np.datetime64(it["properties"]["datetime"].rstrip("Z")[:19]) for it in s2_items]
        pairs = pair_s1_s2(sar.time.values, s2_times, spec.max_dt_days)
        for t, order in enumerate(pairs):
            comp, ok, _ = composite_nearest_clear(opt.values, clear, order)
            opt_out[t] = comp
            clear_out[t] = ok
            pairs_meta[t] = [s2_items[i]["id"] for i in order]
    for t in range(nt):
        log(
            f"  S1 {str(sar.time.values[t])[:10]}: {len(pairs_meta[t])} S2 within "
            f"±{spec.max_dt_days:g} d, {100 * clear_out[t].mean():.0f}% clear pixels"
        )

    bands = list(catalog.sar_bands) + list(catalog.opt_bands) + [CLEAR_BAND]
    data = np.concatenate([sar.values, opt_out, clear_out[:, None]], axis=1).astype("float32")
    cube = cube_dataarray(data, grid, sar.time.values, bands)
    ds = cube.to_dataset(name="cube")
    ds.attrs.update(
        provenance("cube")
        | {
            "sar_bands": list(catalog.sar_bands),
            "opt_bands": list(catalog.opt_bands),
            "grid": grid.to_dict(),
            "query": {"bbox_lonlat": list(query.bbox_lonlat), "start": start, "end": end},
            "catalog": config_to_dict(catalog),
            "cube_spec": config_to_dict(spec),
            "s1_items": json.dumps([[it["id"] for it in g] for _, g in acquisitions]),
            "s2_items_per_time": json.dumps(pairs_meta),
        }
    )
    return ds


def cube_dataarray(
    data: np.ndarray, grid: GridSpec, times: np.ndarray, bands: list[str]
) -> xr.DataArray:
    """(time, band, y, x) DataArray with coordinates and CRS from the grid.

    Band names are variable-length strings: Zarr v3 has no spec for fixed-width unicode.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    da = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": np.array(bands, dtype=object),
            "y": grid.ys(),
            "x": grid.xs(),
        },
        name="cube",
    )
    da = da.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    return da
