"""Stateless helpers for the mosaic Zarr (and cubes): series, indices, masks, change, PNG.

    import xarray as xr
    from sar2opt import analysis as an
    ds = xr.open_zarr("out/demo/mosaic.zarr", consolidated=False)
    opt = an.masked(ds, max_uncertainty=0.05)             # reflectance, NaN where unsure
    g = an.spectral_index(opt, "gli")                     # (time, y, x); "ndvi" needs B08
    an.at_point(g, lon=-55.2, lat=-4.39)                  # time series at a place
    an.in_polygon(g, aoi_geometry).to_series()            # mean over a polygon per date
    lost = an.drop_mask(g, "2019-05-27", "2019-07-02", 0.05)
    an.quicklook(opt.isel(time=0), "t0.png")

Every function takes and returns xarray objects with dims (time, band, y, x) or a subset,
keeps coordinates, and never writes to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from sar2opt.errors import Sar2OptError
from sar2opt.infer.store import OPTICAL_VAR, QUALITY_VARS, SOURCE_VAR, UNCERTAINTY_VAR


class AnalysisError(Sar2OptError):
    """The store lacks the bands or layers an analysis needs."""


def _b(da: xr.DataArray, name: str) -> xr.DataArray:
    have = [str(b) for b in da.band.values]
    if name not in have:
        raise AnalysisError(f"band {name} not in {have}")
    return da.sel(band=name, drop=True)


def _nd(a: str, b: str) -> Callable[[xr.DataArray], xr.DataArray]:
    return lambda da: (_b(da, a) - _b(da, b)) / (_b(da, a) + _b(da, b))


#: Spectral indices by name -> function of an optical DataArray with a ``band`` dim.
#: ndvi/ndwi/evi need NIR (B08); vari and gli work on RGB alone (e.g. MultiEarth's B02-B04).
INDICES: dict[str, Callable[[xr.DataArray], xr.DataArray]] = {
    "ndvi": _nd("B08", "B04"),
    "ndwi": _nd("B03", "B08"),
    "evi": lambda da: (
        2.5
        * (_b(da, "B08") - _b(da, "B04"))
        / (_b(da, "B08") + 6 * _b(da, "B04") - 7.5 * _b(da, "B02") + 1)
    ),
    "vari": lambda da: (
        (_b(da, "B03") - _b(da, "B04")) / (_b(da, "B03") + _b(da, "B04") - _b(da, "B02"))
    ),
    "gli": lambda da: (
        (2 * _b(da, "B03") - _b(da, "B04") - _b(da, "B02"))
        / (2 * _b(da, "B03") + _b(da, "B04") + _b(da, "B02"))
    ),
}


def optical(obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """The reflectance (time, band, y, x) of a mosaic Dataset/DataArray, quality bands dropped."""
    da = obj[OPTICAL_VAR] if isinstance(obj, xr.Dataset) else obj
    keep = [b for b in da.band.values if str(b) not in (*QUALITY_VARS, "clear", "vv", "vh")]
    return da.sel(band=keep)


def quality_layer(obj: xr.Dataset | xr.DataArray, name: str) -> xr.DataArray | None:
    """``uncertainty``/``source`` as a data variable or as a band entry; None when absent."""
    if isinstance(obj, xr.Dataset) and name in obj.data_vars:
        q = obj[name]
        return q.isel(band=0, drop=True) if "band" in q.dims else q
    da = obj[OPTICAL_VAR] if isinstance(obj, xr.Dataset) else obj
    if name in [str(b) for b in da.band.values]:
        return da.sel(band=name, drop=True)
    return None


def evidence_mix(ds: xr.Dataset) -> list[tuple[str, dict[str, float]]]:
    """Per time step (ISO day), the share of pixels each kind of evidence made (``source``:
    real S2, cloud removed, synthesis…), kinds absent from a step left out; [] without it."""
    from sar2opt.infer.composite import SOURCE_MEANINGS

    src = quality_layer(ds, SOURCE_VAR)
    if src is None:
        return []
    out = []
    for t, a in zip(ds.time.values, src.values, strict=True):
        counts = np.bincount(a.ravel().astype(np.int64), minlength=max(SOURCE_MEANINGS) + 1)
        out.append(
            (
                str(t)[:10],
                {m: counts[k] / a.size for k, m in SOURCE_MEANINGS.items() if counts[k]},
            )
        )
    return out


def masked(
    obj: xr.Dataset | xr.DataArray,
    max_uncertainty: float | None = None,
    sources: Sequence[int] | None = None,
) -> xr.DataArray:
    """Reflectance with NaN where ``uncertainty`` > max or ``source`` not in ``sources``.

    A criterion whose layer the store does not have raises, so a request for masking never
    silently returns unmasked data.
    """
    da = optical(obj)
    keep = xr.ones_like(da.isel(band=0, drop=True), dtype=bool)
    if max_uncertainty is not None:
        u = quality_layer(obj, UNCERTAINTY_VAR)
        if u is None:
            raise AnalysisError(f"store has no {UNCERTAINTY_VAR!r} layer to mask by")
        keep = keep & (u <= max_uncertainty)
    if sources is not None:
        s = quality_layer(obj, SOURCE_VAR)
        if s is None:
            raise AnalysisError(f"store has no {SOURCE_VAR!r} layer to mask by")
        keep = keep & s.isin(list(sources))
    return da.where(keep)


def spectral_index(da: xr.DataArray, name: str) -> xr.DataArray:
    """Index ``name`` from INDICES over every (time, y, x) of ``da``."""
    if name not in INDICES:
        raise AnalysisError(f"unknown index {name!r}; choices: {', '.join(sorted(INDICES))}")
    return INDICES[name](optical(da)).rename(name)


def _to_grid(da: xr.DataArray, x: float, y: float, crs: str | None) -> tuple[float, float]:
    if crs is None:
        return x, y
    from pyproj import Transformer

    tr = Transformer.from_crs(crs, da.rio.crs, always_xy=True)
    return tr.transform(x, y)


def at_point(
    da: xr.DataArray,
    x: float | None = None,
    y: float | None = None,
    *,
    lon: float | None = None,
    lat: float | None = None,
) -> xr.DataArray:
    """The nearest pixel's values over time: grid x/y (metres), or lon/lat (EPSG:4326).

    Raises when the place is more than one pixel outside the grid.
    """
    if lon is not None and lat is not None:
        import rioxarray  # noqa: F401  (registers .rio)

        x, y = _to_grid(da, lon, lat, "EPSG:4326")
    if x is None or y is None:
        raise AnalysisError("give x and y (grid metres) or lon and lat")
    res = float(abs(da.x[1] - da.x[0])) if da.sizes["x"] > 1 else 1.0
    tol = 1.5 * res
    if not (float(da.x.min()) - tol <= x <= float(da.x.max()) + tol) or not (
        float(da.y.min()) - tol <= y <= float(da.y.max()) + tol
    ):
        raise AnalysisError(f"point ({x:.1f}, {y:.1f}) is outside the grid")
    return da.sel(x=x, y=y, method="nearest")


def polygon_mask(da: xr.DataArray, geom, crs: str | None = "EPSG:4326") -> xr.DataArray:
    """Boolean (y, x): pixel centres inside ``geom`` (a shapely geometry in ``crs``)."""
    import shapely

    if crs is not None:
        import rioxarray  # noqa: F401
        from pyproj import Transformer

        tr = Transformer.from_crs(crs, da.rio.crs, always_xy=True)
        geom = shapely.transform(geom, lambda x, y: tr.transform(x, y), interleaved=False)
    xx, yy = np.meshgrid(da.x.values, da.y.values)
    inside = shapely.contains_xy(geom, xx, yy)
    return xr.DataArray(inside, dims=("y", "x"), coords={"y": da.y, "x": da.x})


def in_polygon(
    da: xr.DataArray, geom, crs: str | None = "EPSG:4326", reducer: str = "mean"
) -> xr.DataArray:
    """``reducer`` (mean, median, min, max, std) over pixels inside ``geom``, NaN skipped."""
    m = polygon_mask(da, geom, crs)
    if not bool(m.any()):
        raise AnalysisError("polygon covers no pixel centre of the grid")
    if reducer not in ("mean", "median", "min", "max", "std"):
        raise AnalysisError(f"unknown reducer {reducer!r}")
    return getattr(da.where(m), reducer)(("y", "x"), skipna=True)


def change(da: xr.DataArray, t0: str, t1: str) -> xr.DataArray:
    """``da`` at t1 minus at t0 (nearest time steps), e.g. an index drop after clearing."""
    a = da.sel(time=np.datetime64(t0), method="nearest")
    b = da.sel(time=np.datetime64(t1), method="nearest")
    return (b - a).rename(f"change_{da.name or 'value'}")


def drop_mask(da: xr.DataArray, t0: str, t1: str, min_drop: float) -> xr.DataArray:
    """Pixels where ``da`` (e.g. NDVI) fell by at least ``min_drop`` from t0 to t1: clearing."""
    return (change(da, t0, t1) <= -abs(min_drop)).rename("drop")


def quicklook(
    da: xr.DataArray,
    png_path: str | Path,
    *,
    rgb: Sequence[str] = ("B04", "B03", "B02"),
    percentiles: tuple[float, float] = (2, 98),
    cmap: str = "viridis",
    title: str = "",
) -> Path:
    """PNG of one 2-D slice: true colour if ``da`` has a band dim holding ``rgb``, else a
    colour-mapped field with a colour bar (NaN shown grey)."""
    from matplotlib.figure import Figure

    from sar2opt.evaluate.quicklook import percentile_limits, to_rgba

    fig = Figure(figsize=(5, 4.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor("0.5")
    if "band" in da.dims:
        bands = [str(b) for b in da.band.values]
        if not all(b in bands for b in rgb):
            raise AnalysisError(f"quicklook needs bands {list(rgb)}, have {bands}")
        chans = [np.asarray(da.sel(band=b).values, float) for b in rgb]
        if any(c.ndim != 2 for c in chans):
            raise AnalysisError(f"quicklook needs one (y, x) slice, got dims {da.dims}")
        lim = percentile_limits(np.concatenate([c.ravel() for c in chans]), percentiles)
        ax.imshow(to_rgba(chans, [lim] * 3), interpolation="nearest")
    else:
        arr = np.asarray(da.values, float)
        if arr.ndim != 2:
            raise AnalysisError(f"quicklook needs one (y, x) slice, got dims {da.dims}")
        lo, hi = percentile_limits(arr, percentiles)
        im = ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=str(da.name or ""))
    ax.set_xticks([])
    ax.set_yticks([])
    if "time" in da.coords and da["time"].size == 1:
        title = title or str(da["time"].values)[:10]
    if title:
        ax.set_title(title, fontsize=10)
    p = Path(png_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p
