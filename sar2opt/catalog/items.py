"""STAC items shaped like Planetary Computer's, so one search/stack code path reads local and PC.

Three collections are modelled:

* ``sentinel-1-rtc``: assets ``vv``/``vh`` hold float32 LINEAR gamma0 power, nodata -32768;
  synthetic items add ``layover``/``shadow`` uint8 masks (1 = affected, role ``data-mask``).
* ``sentinel-2-l2a``: assets ``B01``.. hold uint16 DN = reflectance x 10000 (nodata 0, processing
  baseline "03.00": no +1000 BOA offset), plus ``QA60``/``SCL``/``CLP`` (cloud probability)
  when present; synthetic items add ``truth_B02``.. (the same bands without clouds or
  shadows, role ``truth``).
* ``cop-dem-glo-30``: one asset ``data``, float32 elevation in metres (nodata -32767).

Every item carries both ``proj:epsg`` (read by stackstac and older tools) and ``proj:code``
(projection extension v2), ``proj:shape``/``proj:transform``/``proj:bbox`` from the one
``GridSpec``, and a lon/lat ``geometry``/``bbox`` for searching.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sar2opt.cube.clean import CLP_BAND, CLP_NODATA
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec

S1_COLLECTION = "sentinel-1-rtc"
S2_COLLECTION = "sentinel-2-l2a"
DEM_COLLECTION = "cop-dem-glo-30"
DEM_NODATA = -32767.0
TRUTH_PREFIX = "truth_"
S1_NODATA = -32768.0
S2_NODATA = 0
S2_SCALE = 10000.0
STAC_VERSION = "1.0.0"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

EXT_PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EXT_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EXT_SAR = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
EXT_SAT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
EXT_EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"

# name -> (common_name, centre wavelength um, gsd m), as in PC's sentinel-2-l2a items.
S2_BANDS: dict[str, tuple[str | None, float | None, float]] = {
    "B01": ("coastal", 0.443, 60.0),
    "B02": ("blue", 0.490, 10.0),
    "B03": ("green", 0.560, 10.0),
    "B04": ("red", 0.665, 10.0),
    "B05": ("rededge", 0.704, 20.0),
    "B06": ("rededge", 0.740, 20.0),
    "B07": ("rededge", 0.783, 20.0),
    "B08": ("nir", 0.842, 10.0),
    "B8A": ("rededge", 0.865, 20.0),
    "B11": ("swir16", 1.610, 20.0),
    "B12": ("swir22", 2.190, 20.0),
}
S1_POLS = {
    "vv": "VV: vertical transmit, vertical receive",
    "vh": "VH: vertical transmit, horizontal receive",
}
S1_MASKS = {
    "layover": "Radar layover mask (1 = layover)",
    "shadow": "Radar shadow mask (1 = shadow)",
}


def format_datetime(dt: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def grid_geometry(grid: GridSpec, densify: int = 8) -> dict[str, Any]:
    """Lon/lat footprint polygon of ``grid`` (edges densified so the UTM->lon/lat bend is kept)."""
    from pyproj import Transformer

    xmin, ymin, xmax, ymax = grid.bounds
    xs: list[float] = []
    ys: list[float] = []
    corners = [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)]
    for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:], strict=True):
        for i in range(densify):
            t = i / densify
            xs.append(x0 + (x1 - x0) * t)
            ys.append(y0 + (y1 - y0) * t)
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    lons, lats = tr.transform(xs, ys)
    ring = [[round(float(lo), 9), round(float(la), 9)] for lo, la in zip(lons, lats, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox_of(geometry: Mapping[str, Any]) -> list[float]:
    ring = geometry["coordinates"][0]
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    return [min(lons), min(lats), max(lons), max(lats)]


def _json_number(v: float | int | None) -> float | int | None:
    """Nodata as a JSON number: NaN/inf are not valid JSON, so they are refused here."""
    if v is None:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"nodata {v} cannot be written to JSON; use a finite sentinel")
    return v


def raster_band(data_type: str, nodata: float | int | None, res_m: float, **extra: Any) -> dict:
    """One ``raster:bands`` entry (nodata omitted when the band has none)."""
    band: dict[str, Any] = {"data_type": data_type, "spatial_resolution": res_m}
    if nodata is not None:
        band["nodata"] = _json_number(nodata)
    band.update(extra)
    return band


def base_item(
    item_id: str,
    collection: str,
    dt: datetime,
    grid: GridSpec,
    properties: Mapping[str, Any],
    assets: Mapping[str, dict],
    extensions: Sequence[str],
) -> dict[str, Any]:
    """The fields every item shares: footprint, time, projection, extensions."""
    geometry = grid_geometry(grid)
    t = grid.transform
    props: dict[str, Any] = {
        "datetime": format_datetime(dt),
        "proj:epsg": int(grid.epsg),
        "proj:code": f"EPSG:{int(grid.epsg)}",
        "proj:shape": [grid.height, grid.width],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": list(grid.bounds),
        "gsd": grid.res_m,
    }
    props.update(properties)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXT_PROJ, EXT_RASTER, *extensions],
        "id": item_id,
        "collection": collection,
        "geometry": geometry,
        "bbox": _bbox_of(geometry),
        "properties": props,
        "links": [],
        "assets": {k: dict(v) for k, v in assets.items()},
    }


def _href(p: str | Path) -> str:
    return str(Path(p).resolve())


def s1_item(
    item_id: str,
    dt: datetime,
    grid: GridSpec,
    hrefs: Mapping[str, str | Path],
    *,
    platform: str = "SENTINEL-1A",
    orbit_state: str | None = "descending",
    relative_orbit: int | None = None,
    extra_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``sentinel-1-rtc`` item; ``hrefs`` maps ``vv``/``vh`` to float32 linear-power COGs
    (and optionally ``layover``/``shadow`` to uint8 mask COGs)."""
    unknown = set(hrefs) - set(S1_POLS) - set(S1_MASKS)
    if unknown or not set(hrefs) & set(S1_POLS):
        raise ValueError(
            f"S1 assets must be among {sorted(S1_POLS) + sorted(S1_MASKS)}, got {sorted(hrefs)}"
        )
    assets: dict[str, dict] = {}
    for name, href in hrefs.items():
        if name in S1_POLS:
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": S1_POLS[name],
                "roles": ["data"],
                "raster:bands": [raster_band("float32", S1_NODATA, grid.res_m)],
            }
        else:
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": S1_MASKS[name],
                "roles": ["data-mask"],
                "raster:bands": [raster_band("uint8", None, grid.res_m)],
            }
    props: dict[str, Any] = {
        "platform": platform,
        "constellation": "Sentinel-1",
        "instruments": ["c-sar"],
        "sar:polarizations": [p.upper() for p in ("vv", "vh") if p in hrefs],
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:product_type": "GRD",
        "sar:observation_direction": "right",
    }
    if orbit_state is not None:
        props["sat:orbit_state"] = orbit_state
    if relative_orbit is not None:
        props["sat:relative_orbit"] = int(relative_orbit)
    props.update(extra_properties or {})
    return base_item(item_id, S1_COLLECTION, dt, grid, props, assets, [EXT_SAR, EXT_SAT])


def s2_item(
    item_id: str,
    dt: datetime,
    grid: GridSpec,
    hrefs: Mapping[str, str | Path],
    *,
    cloud_cover: float | None,
    platform: str = "Sentinel-2B",
    processing_baseline: str = "03.00",
    extra_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``sentinel-2-l2a`` item: bands ``B01``.. as uint16 DN (x1e4), ``QA60``, ``SCL``,
    ``CLP`` (uint8 cloud probability in percent, nodata 255, as BioMassters ships it).

    QA60 gets no nodata (0 means "no cloud bit set", not "missing"); SCL is uint8 with nodata 0,
    as on Planetary Computer.
    """
    assets: dict[str, dict] = {}
    for name, href in hrefs.items():
        if name.startswith(TRUTH_PREFIX) and name[len(TRUTH_PREFIX) :] in S2_BANDS:
            band = name[len(TRUTH_PREFIX) :]
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": f"Cloud-free truth of {band} (synthetic)",
                "roles": ["truth"],
                "raster:bands": [
                    raster_band("uint16", S2_NODATA, grid.res_m, scale=1.0 / S2_SCALE, offset=0.0)
                ],
            }
        elif name in S2_BANDS:
            common, wl, gsd = S2_BANDS[name]
            eo_band: dict[str, Any] = {"name": name, "common_name": common}
            if wl is not None:
                eo_band["center_wavelength"] = wl
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": f"Band {name[1:].lstrip('0')} - {common}",  # B02 -> 2, B8A -> 8A
                "roles": ["data"],
                "gsd": gsd,
                "eo:bands": [eo_band],
                "raster:bands": [
                    raster_band("uint16", S2_NODATA, grid.res_m, scale=1.0 / S2_SCALE, offset=0.0)
                ],
            }
        elif name == "QA60":
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": "QA60 cloud bitmask (bits 10 opaque, 11 cirrus)",
                "roles": ["cloud"],
                "raster:bands": [raster_band("uint16", None, grid.res_m)],
            }
        elif name == CLP_BAND:
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": "Cloud probability (%, s2cloudless)",
                "roles": ["cloud"],
                "raster:bands": [raster_band("uint8", CLP_NODATA, grid.res_m, unit="percent")],
            }
        elif name == "SCL":
            assets[name] = {
                "href": _href(href),
                "type": COG_TYPE,
                "title": "Scene classification map (SCL)",
                "roles": ["data"],
                "raster:bands": [raster_band("uint8", 0, grid.res_m)],
            }
        else:
            raise ValueError(f"unknown Sentinel-2 asset {name!r}")
    props: dict[str, Any] = {
        "platform": platform,
        "constellation": "Sentinel 2",
        "instruments": ["msi"],
        "s2:processing_baseline": processing_baseline,
    }
    if cloud_cover is not None:
        props["eo:cloud_cover"] = round(float(cloud_cover), 3)
    props.update(extra_properties or {})
    return base_item(item_id, S2_COLLECTION, dt, grid, props, assets, [EXT_EO])


def dem_item(
    item_id: str,
    grid: GridSpec,
    href: str | Path,
    *,
    dt: datetime | None = None,
    extra_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``cop-dem-glo-30``-like item: one ``data`` asset, float32 metres above the geoid.

    Like Planetary Computer's, it carries one fixed datetime (the DEM's release, 2021-04-22).
    """
    dt = dt or datetime(2021, 4, 22, tzinfo=timezone.utc)
    assets = {
        "data": {
            "href": _href(href),
            "type": COG_TYPE,
            "title": "Elevation (m)",
            "roles": ["data"],
            "raster:bands": [raster_band("float32", DEM_NODATA, grid.res_m, unit="metre")],
        }
    }
    props: dict[str, Any] = {"platform": "TanDEM-X", "gsd": grid.res_m}
    props.update(extra_properties or {})
    return base_item(item_id, DEM_COLLECTION, dt, grid, props, assets, [])


def write_catalog(items: Sequence[dict], catalog_dir: str | Path) -> Path:
    """Write ``items.parquet`` (stac-geoparquet, what the server loads) and ``items.json``.

    The JSON FeatureCollection is for people and for debugging; the parquet file is the catalog.
    Returns the parquet path.
    """
    import rustac

    if not items:
        raise CatalogError("no items to write: the catalog would be empty")
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})
        raise CatalogError(f"duplicate item ids: {dups[:5]}")
    catalog_dir = Path(catalog_dir)
    catalog_dir.mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda it: (it["collection"], it["properties"]["datetime"], it["id"]))
    fc = {"type": "FeatureCollection", "features": list(items)}
    (catalog_dir / "items.json").write_text(json.dumps(fc, indent=1, allow_nan=False) + "\n")
    parquet = catalog_dir / "items.parquet"
    rustac.write_sync(str(parquet), list(items))
    return parquet
