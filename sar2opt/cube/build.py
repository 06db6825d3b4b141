"""Build an analysis-ready cube: S1 in dB + paired cloud-free S2 + clear flag, on one grid.

One time step per Sentinel-1 acquisition. Its optical bands are a per-pixel composite of
the clear S2 observations within ±``max_dt_days`` (nearest first), so training sees every
clear pixel near the radar date instead of one whole, often cloudy, image. With
``spec.cloudy`` it also keeps the same-date observation itself, clouds included, and its
cloud mask (``cloudy_<band>``, ``cloud_mask``): the cloud-removal input of SC/SCO/SCOD
models, whose target is that composite.

``search_inputs`` fixes the time axis and the items once; ``assemble`` turns them into pixels
on any grid: ``load_pixels`` reads them (a stackstac graph, or the windowed COG reader of
``window_load``: the same values), ``compose`` cleans and pairs them. ``build_cube`` runs both
on the AOI's grid in memory through stackstac; the tiled builder (``sar2opt.cube.tiled_build``)
runs them per tile with the items that meet it, through the windowed reader, so a tile holds
exactly the pixels ``build_cube`` gives for the same window.

Where S2 items carry a ``CLP`` asset (cloud probability, BioMassters), every reader here loads
it beside the optical bands and the cloud test uses it (``clean.cloud_shadow_mask``): in the
cube (whole and tiled) and in ``read_prior``/``read_cloudy`` (inference), one rule for both.
It is a mask only: never a cube band, never normalised or scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from shapely.geometry.base import BaseGeometry

from sar2opt.aoi import grid_for_aoi
from sar2opt.config import CatalogSpec, CubeSpec, config_to_dict
from sar2opt.cube.align import (
    Date,
    composite_nearest_clear,
    pair_prior,
    pair_s1_s2,
    prior_first_clear,
    prior_optical,
    same_date_first,
    same_date_optical,
)
from sar2opt.cube.clean import cloud_shadow_mask
from sar2opt.cube.load import group_acquisitions, load_clp, load_dem, load_optical, load_sar
from sar2opt.cube.window_load import read_clp, read_dem, read_optical, read_sar_step
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec
from sar2opt.profiles import profile_for, require_geocoded
from sar2opt.provenance import provenance
from sar2opt.stac import search_aoi, search_s1

CLEAR_BAND = "clear"
DEM_BAND = "dem"
PRIOR_PREFIX = "prior_"
CLOUDY_PREFIX = "cloudy_"  # the same-date S2 observation, clouds included
CLOUD_MASK_BAND = "cloud_mask"  # 1 where that observation is cloud, shadow or missing
# DEM items are static: search them over all time
DEM_DATES = ("1900-01-01", "2100-12-31")


@dataclass(frozen=True)
class CubeQuery:
    """What a cube was built from: the AOI's bounds and the date range."""

    bbox_lonlat: tuple[float, float, float, float]
    start: str
    end: str


@dataclass(frozen=True)
class CubeInputs:
    """The searched items behind a cube: one S1 group per time step (frames of one pass;
    empty where a tile sees none of that pass), and the S2 and DEM items."""

    times: tuple[str, ...]
    s1_groups: tuple[tuple[dict, ...], ...]
    s2_items: tuple[dict, ...]
    dem_items: tuple[dict, ...] = ()

    def time_coord(self) -> np.ndarray:
        """datetime64[ns] of each time step (naive UTC), as the cube stores them."""
        return np.array([_naive(t) for t in self.times], dtype="datetime64[ns]")


def _naive(iso: str) -> np.datetime64:
    return np.datetime64(iso.rstrip("Z").split("+")[0], "ns")


def _s2_time(item: dict) -> np.datetime64:
    return np.datetime64(item["properties"]["datetime"].rstrip("Z")[:19])


def search_inputs(
    aoi: BaseGeometry, start: str, end: str, *, catalog: CatalogSpec, spec: CubeSpec
) -> CubeInputs:
    """Search S1 (the time axis), S2 (padded by ``max_dt_days`` and ``prior_days``) and the DEM.

    Raises ``CatalogError`` when no S1 item, or (with ``dem_collection``) no DEM item, meets
    the AOI: nothing has been written yet at that point.
    """
    require_geocoded(profile_for(catalog.stac_url, catalog.s1_collection))
    s1_items = search_s1(catalog, aoi, start, end)
    pad = np.timedelta64(int(spec.max_dt_days * 86400), "s")
    prior_pad = np.timedelta64(int(spec.prior_days * 86400), "s")
    s2_start = str((np.datetime64(start) - pad - prior_pad).astype("datetime64[D]"))
    s2_end = str((np.datetime64(end) + pad).astype("datetime64[D]"))
    s2_items = search_aoi(catalog, catalog.s2_collection, aoi, s2_start, s2_end)
    dem_items = search_dem(catalog, aoi) if catalog.dem_collection else []
    return inputs_from_items(s1_items, s2_items, dem_items)


def search_dem(catalog: CatalogSpec, aoi: BaseGeometry, *, needed_by: str = "") -> list[dict]:
    """Items of ``catalog.dem_collection`` over the AOI (static: searched over all time);
    ``CatalogError`` when none meets it (``needed_by`` says who needs them)."""
    profile = profile_for(catalog.stac_url, catalog.dem_collection)
    items = search_aoi(catalog, profile.collection, aoi, *DEM_DATES)
    if not items:
        why = f" ({needed_by})" if needed_by else ""
        raise CatalogError(
            f"no {profile.collection} items cover the AOI in {catalog.stac_url}{why}"
        )
    return items


def inputs_from_items(
    s1_items: Sequence[dict], s2_items: Sequence[dict], dem_items: Sequence[dict] = ()
) -> CubeInputs:
    """Group S1 items into acquisitions (the time axis)."""
    acquisitions = group_acquisitions(s1_items)
    return CubeInputs(
        times=tuple(iso for iso, _ in acquisitions),
        s1_groups=tuple(tuple(g) for _, g in acquisitions),
        s2_items=tuple(s2_items),
        dem_items=tuple(dem_items),
    )


def cube_bands(catalog: CatalogSpec, spec: CubeSpec) -> list[str]:
    """Band order: SAR, optical, ``clear``, [``dem``], [``prior_<band>``...],
    [``cloudy_<band>``..., ``cloud_mask``]."""
    bands = list(catalog.sar_bands) + list(catalog.opt_bands) + [CLEAR_BAND]
    if catalog.dem_collection:
        bands.append(DEM_BAND)
    if spec.prior_days > 0:
        bands += [PRIOR_PREFIX + b for b in catalog.opt_bands]
    bands += cloudy_bands(catalog.opt_bands, spec)
    return bands


def cloudy_bands(opt_bands: Sequence[str], spec: CubeSpec) -> list[str]:
    """The cloud-removal bands (``spec.cloudy``): ``cloudy_<band>``..., then ``cloud_mask``."""
    return [CLOUDY_PREFIX + b for b in opt_bands] + [CLOUD_MASK_BAND] if spec.cloudy else []


def pairing(inputs: CubeInputs, spec: CubeSpec) -> tuple[list[list[int]], list[list[int]]]:
    """Per time step, S2 indices of the target window and of the prior window (nearest first)."""
    s2_times = [_s2_time(it) for it in inputs.s2_items]
    times = inputs.time_coord()
    pairs = pair_s1_s2(times, s2_times, spec.max_dt_days) if s2_times else [[] for _ in times]
    if spec.prior_days > 0 and s2_times:
        priors = pair_prior(times, s2_times, spec.max_dt_days, spec.prior_days)
    else:
        priors = [[] for _ in times]
    return pairs, priors


#: How ``assemble`` reads pixels: a stackstac graph and one dask run (lazy loading, the
#: in-memory ``build_cube``), or the windowed COG reader with no dask (``window_load``, the
#: tiled build). Both give the same values.
READERS = ("stackstac", "windows")


@dataclass(frozen=True)
class Pixels:
    """The inputs of one grid, loaded and in physical units, before cleaning and pairing.

    ``sar`` (time, band, y, x) dB, NaN where a step has no frame; ``opt`` (S2 item, band, y, x)
    reflectance or ``None`` without S2 items; ``dem`` (y, x) metres or ``None`` without a DEM;
    ``clp`` (S2 item, y, x) cloud probability in percent (NaN where an item has none) or
    ``None`` when no S2 item carries ``CLP``.
    """

    sar: np.ndarray
    opt: np.ndarray | None
    dem: np.ndarray | None
    clp: np.ndarray | None = None


def load_pixels(
    grid: GridSpec,
    inputs: CubeInputs,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    reader: str = "stackstac",
) -> Pixels:
    """Read ``inputs`` onto ``grid`` (no cleaning): the I/O half of ``assemble``."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    s1_profile = profile_for(catalog.stac_url, catalog.s1_collection)
    s2_profile = profile_for(catalog.stac_url, catalog.s2_collection)
    nt, (h, w) = len(inputs.times), grid.shape
    sar = np.full((nt, len(catalog.sar_bands), h, w), np.nan, dtype="float32")
    opt = clp = None
    if reader == "windows":
        for t, g in enumerate(inputs.s1_groups):
            if g:
                sar[t] = read_sar_step(list(g), grid, catalog.sar_bands, s1_profile)
        if inputs.s2_items:
            opt = read_optical(list(inputs.s2_items), grid, catalog.opt_bands, s2_profile)
            clp = read_clp(list(inputs.s2_items), grid, s2_profile)
    else:
        import dask

        lazy = {
            t: load_sar(
                list(g), grid, catalog.sar_bands, chunk_px=spec.chunk_px, profile=s1_profile
            ).isel(time=0)
            for t, g in enumerate(inputs.s1_groups)
            if g
        }
        opt_lazy = (
            load_optical(
                list(inputs.s2_items),
                grid,
                catalog.opt_bands,
                chunk_px=spec.chunk_px,
                profile=s2_profile,
            ).data
            if inputs.s2_items
            else None
        )
        clp_lazy = (
            load_clp(list(inputs.s2_items), grid, chunk_px=spec.chunk_px, profile=s2_profile)
            if inputs.s2_items
            else None
        )
        clp_lazy = None if clp_lazy is None else clp_lazy.data
        # one dask run for every read of the grid: the threads overlap S1 and S2 I/O
        *sar_steps, opt, clp = dask.compute(*[a.data for a in lazy.values()], opt_lazy, clp_lazy)
        for t, arr in zip(lazy, sar_steps, strict=True):
            sar[t] = arr
    dem = None
    if catalog.dem_collection:
        dem_profile = profile_for(catalog.stac_url, catalog.dem_collection)
        if not inputs.dem_items:  # a tile beyond every DEM item
            dem = np.full((h, w), np.nan, dtype="float32")
        elif reader == "windows":
            dem = read_dem(list(inputs.dem_items), grid, dem_profile)
        else:
            dem = load_dem(
                list(inputs.dem_items), grid, chunk_px=spec.chunk_px, profile=dem_profile
            )
    return Pixels(sar, opt, dem, clp)


def compose(
    pixels: Pixels,
    inputs: CubeInputs,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    log=print,
) -> np.ndarray:
    """Clean and pair loaded pixels: float32 (time, band, y, x) in ``cube_bands`` order.

    ``log=None`` skips the per-date statistics (tiles of a batch build)."""
    nt, n_sar, h, w = pixels.sar.shape
    n_opt = len(catalog.opt_bands)
    bands = cube_bands(catalog, spec)
    out = np.empty((nt, len(bands), h, w), dtype="float32")
    out[:, :n_sar] = pixels.sar
    opt_out = out[:, n_sar : n_sar + n_opt]
    clear_out = out[:, n_sar + n_opt]
    opt_out[:] = np.nan
    clear_out[:] = 0
    prior_out = None
    if spec.prior_days > 0:
        i = bands.index(PRIOR_PREFIX + catalog.opt_bands[0])
        prior_out = out[:, i : i + n_opt]
    if prior_out is not None:
        prior_out[:] = np.nan
    cloudy_out = None
    if spec.cloudy:
        i = bands.index(CLOUDY_PREFIX + catalog.opt_bands[0])
        cloudy_out, mask_out = out[:, i : i + n_opt], out[:, i + n_opt]
        cloudy_out[:] = np.nan
        mask_out[:] = 1  # no S2 within ±max_dt_days: all masked
    pairs, _ = pairing(inputs, spec)
    if pixels.opt is not None:
        clear = clear_mask(pixels.opt, catalog.opt_bands, spec, clp=pixels.clp)
        if log is not None:
            for i, s2_frac in enumerate(clear.mean(axis=(1, 2))):
                log(f"  S2 {inputs.s2_items[i]['id']}: {100 * s2_frac:.0f}% clear")
        for t, order in enumerate(pairs):
            composite_nearest_clear(pixels.opt, clear, order, out=opt_out[t], ok=clear_out[t])
            if cloudy_out is not None:
                same_date_optical(pixels.opt, clear, order, out=cloudy_out[t], mask=mask_out[t])
        if prior_out is not None:
            s2_times = [_s2_time(it) for it in inputs.s2_items]
            for t, time in enumerate(inputs.time_coord()):
                prior_optical(
                    pixels.opt, clear, s2_times, time, spec.max_dt_days, spec.prior_days,
                    out=prior_out[t],
                )  # fmt: skip
    if log is not None:
        for t in range(nt):
            log(
                f"  S1 {inputs.times[t][:10]}: {len(pairs[t])} S2 within "
                f"±{spec.max_dt_days:g} d, {100 * clear_out[t].mean():.0f}% clear pixels"
            )
    if catalog.dem_collection:
        if log is not None and inputs.dem_items:
            dem = pixels.dem
            log(f"DEM: {len(inputs.dem_items)} items, {np.nanmin(dem):.0f}..{np.nanmax(dem):.0f} m")
        out[:, bands.index(DEM_BAND)] = pixels.dem
    return out


def clear_mask(
    opt: np.ndarray, opt_bands: Sequence[str], spec: CubeSpec, *, clp: np.ndarray | None = None
) -> np.ndarray:
    """(S2 item, y, x) True where a pixel of ``opt`` (S2 item, band, y, x) is clear: the
    cube's cloud and shadow test with ``spec``'s thresholds (the cloud probability ``clp``
    (S2 item, y, x) where known), dilated by ``cloud_dilate_px`` (so read a halo of that many
    pixels for a window to match the whole grid)."""
    return ~cloud_shadow_mask(
        opt,
        list(opt_bands),
        cloud_brightness=spec.cloud_brightness,
        cloud_whiteness=spec.cloud_whiteness,
        shadow_brightness=spec.shadow_brightness,
        dilate_px=spec.cloud_dilate_px,
        clp=clp,
    )


def prior_items(items: Sequence[dict], time: str, spec: CubeSpec) -> list[dict]:
    """The S2 ``items`` the prior of the time step ``time`` (ISO) can come from, in their
    order (``pair_prior``'s window): all ``read_prior`` needs to read."""
    if spec.prior_days <= 0 or not items:
        return []
    (order,) = pair_prior(
        [_naive(time)], [_s2_time(it) for it in items], spec.max_dt_days, spec.prior_days
    )
    return [items[i] for i in sorted(order)]


def cloudy_items(items: Sequence[dict], time: str, spec: CubeSpec) -> list[dict]:
    """The S2 ``items`` within ±``max_dt_days`` of the time step ``time`` (ISO), in their
    order (``pair_s1_s2``'s window): all ``read_cloudy`` needs to read."""
    if not items:
        return []
    (order,) = pair_s1_s2([_naive(time)], [_s2_time(it) for it in items], spec.max_dt_days)
    return [items[i] for i in sorted(order)]


def clean_dates(
    items: Sequence[dict],
    order: Sequence[int],
    grid: GridSpec,
    *,
    opt_bands: Sequence[str],
    spec: CubeSpec,
    profile=None,
) -> Iterator[Date]:
    """The S2 ``items`` at ``order`` (nearest first) on ``grid``, one date at a time, each
    read and cleaned only when asked for: (index, reflectance (band, y, x), clear (y, x)).

    The per-date clean of the inference readers: ``read_optical`` and ``clear_mask`` of one
    item give that item's plane of the whole stack's (the cloud test and its dilation are
    per image, with the item's own ``CLP``), so the rules that stop at the first date
    covering every pixel (``composite_first_clear``, ``same_date_first``) give what they
    give on the stack while the dates past it are never read."""
    for i in order:
        opt = read_optical([items[i]], grid, opt_bands, profile)
        clp = read_clp([items[i]], grid, profile)  # None when the item has no CLP
        yield i, opt[0], clear_mask(opt, opt_bands, spec, clp=clp)[0]


def read_cloudy(
    items: Sequence[dict],
    grid: GridSpec,
    time: str,
    *,
    opt_bands: Sequence[str],
    spec: CubeSpec,
    profile=None,
) -> np.ndarray:
    """The same-date S2 of the time step ``time`` (ISO) on ``grid`` with its cloud mask:
    (band + 1, y, x), reflectance (NaN where no S2 observation) then the mask (1 = cloud,
    shadow or none, 0 = clear). Reads the ``items`` within ±``max_dt_days``, nearest first,
    through the windowed reader, and only until every pixel has an observation
    (``clean_dates``), and applies the cube's rules (``clear_mask``, with the items' ``CLP``
    where they carry it; ``same_date_optical``): the values ``compose`` writes into
    ``cloudy_<band>`` and ``cloud_mask`` for the same grid (halo included). The inference
    reader of SC/SCO/SCOD models."""
    items = cloudy_items(items, time, spec)
    h, w = grid.shape
    out = np.full((len(opt_bands) + 1, h, w), np.nan, dtype="float32")
    out[-1] = 1
    if not items:
        return out
    (order,) = pair_s1_s2([_naive(time)], [_s2_time(it) for it in items], spec.max_dt_days)
    dates = clean_dates(items, order, grid, opt_bands=opt_bands, spec=spec, profile=profile)
    same_date_first(dates, out[:-1].shape, out=out[:-1], mask=out[-1])
    return out


def read_prior(
    items: Sequence[dict],
    grid: GridSpec,
    time: str,
    *,
    opt_bands: Sequence[str],
    spec: CubeSpec,
    profile=None,
) -> np.ndarray:
    """The prior optical of the time step ``time`` (ISO) on ``grid``: (band, y, x)
    reflectance, NaN where no clear S2 pixel lies in the prior window. Reads the ``items``
    in that window, latest first, through the windowed reader, and only until every pixel
    has a clear one (``clean_dates``), and applies the cube's rules (``clear_mask``, with the
    items' ``CLP`` where they carry it; ``prior_optical``): the values ``compose`` writes
    into ``prior_<band>`` for the same grid (halo included). The inference reader of SO/SOD
    models."""
    items = prior_items(items, time, spec)
    h, w = grid.shape
    if not items:
        return np.full((len(opt_bands), h, w), np.nan, dtype="float32")
    return prior_first_clear(
        lambda order: clean_dates(
            items, order, grid, opt_bands=opt_bands, spec=spec, profile=profile
        ),
        (len(opt_bands), h, w),
        [_s2_time(it) for it in items],
        _naive(time),
        spec.max_dt_days,
        spec.prior_days,
    )


def assemble(
    grid: GridSpec,
    inputs: CubeInputs,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    log=print,
    reader: str = "stackstac",
) -> np.ndarray:
    """Load, clean and pair ``inputs`` on ``grid``: float32 (time, band, y, x) in ``cube_bands``
    order. Pure in its pixels: the same window of a larger grid gives the same values, and
    either ``reader`` gives the same values."""
    pixels = load_pixels(grid, inputs, catalog=catalog, spec=spec, reader=reader)
    return compose(pixels, inputs, catalog=catalog, spec=spec, log=log)


def cube_attrs(
    grid: GridSpec,
    inputs: CubeInputs,
    query: CubeQuery,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
) -> dict:
    """The attrs every cube store carries (read by training, evaluation and inference)."""
    pairs, priors = pairing(inputs, spec)
    ids = [it["id"] for it in inputs.s2_items]
    prior_bands = [PRIOR_PREFIX + b for b in catalog.opt_bands] if spec.prior_days > 0 else []
    cloudy = cloudy_bands(catalog.opt_bands, spec)
    return provenance("cube") | {
        "sar_bands": list(catalog.sar_bands),
        "opt_bands": list(catalog.opt_bands),
        "grid": grid.to_dict(),
        "query": {"bbox_lonlat": list(query.bbox_lonlat), "start": query.start, "end": query.end},
        "catalog": config_to_dict(catalog),
        "cube_spec": config_to_dict(spec),
        "s1_items": json.dumps([[it["id"] for it in g] for g in inputs.s1_groups]),
        "s2_items_per_time": json.dumps([[ids[i] for i in order] for order in pairs]),
        "dem_band": DEM_BAND if catalog.dem_collection else None,
        "dem_items": json.dumps([it["id"] for it in inputs.dem_items]),
        "prior_bands": prior_bands,
        "prior_items_per_time": json.dumps([[ids[i] for i in order] for order in priors]),
        # the same-date S2 (reflectance bands, then its cloud mask) of SC/SCO/SCOD models
        "cloudy_bands": cloudy,
    }


def build_cube(
    aoi: BaseGeometry,
    start: str,
    end: str,
    *,
    catalog: CatalogSpec,
    spec: CubeSpec,
    log=print,
) -> xr.Dataset:
    """Search, load, clean and pair; returns a Dataset with variable ``cube`` (time, band, y, x).

    Bands: SAR (dB), optical (reflectance), ``clear``, then ``dem`` (metres) when
    ``catalog.dem_collection`` is set, then ``prior_<band>`` when ``spec.prior_days > 0``,
    then ``cloudy_<band>`` and ``cloud_mask`` when ``spec.cloudy``.
    In memory, for one grid: large AOIs go through ``sar2opt.cube.tiled_build``.
    """
    grid = grid_for_aoi(aoi, spec.res_m, spec.epsg)
    query = CubeQuery(tuple(round(v, 6) for v in aoi.bounds), start, end)
    log(f"grid: {grid}")
    inputs = search_inputs(aoi, start, end, catalog=catalog, spec=spec)
    n_s1 = sum(len(g) for g in inputs.s1_groups)
    log(
        f"found {len(inputs.times)} S1 acquisitions ({n_s1} items), {len(inputs.s2_items)} S2 items"
    )
    data = assemble(grid, inputs, catalog=catalog, spec=spec, log=log)
    cube = cube_dataarray(data, grid, inputs.time_coord(), cube_bands(catalog, spec))
    ds = cube.to_dataset(name="cube")
    ds.attrs.update(cube_attrs(grid, inputs, query, catalog=catalog, spec=spec))
    return ds


def cube_dataarray(
    data: np.ndarray, grid: GridSpec, times: np.ndarray, bands: list[str]
) -> xr.DataArray:
    """(time, band, y, x) DataArray with coordinates and CRS from the grid.

    Band names are variable-length strings: Zarr v3 has no spec for fixed-width unicode.
    ``data`` may be a dask array (the tiled builder's empty template).
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
    # list spatial_ref under "coordinates" so a plain xr.open_zarr keeps .rio.crs
    da.encoding["coordinates"] = "spatial_ref"
    return da
