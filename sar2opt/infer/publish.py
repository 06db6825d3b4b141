"""Publish each time step of an output store as a STAC item, so mosaics are searchable and
STAC clients open them as they are.

Items live inside the store (``<store>/stac/<id>.json`` plus ``collection.json``) with
relative hrefs, so the store can be moved or renamed (the job renames ``.partial`` into
place) and served by the same local STAC server as the inputs.

What clients need is in the documents, not in sar2opt: the collection describes the store
with the datacube extension (``cube:dimensions``, ``cube:variables``) and its asset carries
the xarray-assets ``xarray:open_kwargs``, so ``xr.open_dataset(asset, engine="stac")``
(xpystac) opens it; each item carries the projection fields of the grid (``proj:code``,
``proj:shape``, ``proj:transform``, ``proj:bbox``). Relative asset hrefs are resolved by
``pystac`` (``make_asset_hrefs_absolute``) before a reader that takes ``asset.href`` as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from sar2opt.grid import GridSpec
from sar2opt.infer.composite import SOURCE_MEANINGS
from sar2opt.infer.store import (
    CHECKPOINT_SHA256_ATTR,
    GRID_ATTR,
    OBS_TIME_UNITS,
    OBS_TIME_VAR,
    OPTICAL_VAR,
    S1_IDS_ATTR,
    SOURCE_VAR,
    STAC_DIR,
    TIMES_ATTR,
    UNCERTAINTY_LONG_NAME,
    UNCERTAINTY_VAR,
    VARS,
    as_zarr_group,
    read_attrs,
)

COLLECTION = "sar2opt-mosaic"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
DATACUBE_EXT = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
XARRAY_EXT = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
#: How xarray opens the store: lazily (dask), and without consolidated metadata (the store
#: has none: ``store`` writes only what the Zarr v3 spec defines).
XARRAY_OPEN_KWARGS = {"engine": "zarr", "consolidated": False, "zarr_format": 3, "chunks": {}}


def zarr_asset(title: str) -> dict:
    """The store as an asset of a document inside ``<store>/stac/`` (href ``..``)."""
    return {
        "href": "..",
        "type": ZARR_MEDIA_TYPE,
        "roles": ["data"],
        "title": title,
        "xarray:open_kwargs": dict(XARRAY_OPEN_KWARGS),
        "zarr:consolidated": False,
        "zarr:zarr_format": 3,
    }


def projection(grid: GridSpec) -> dict:
    """The projection extension's fields of a grid (the store's whole raster)."""
    return {
        "proj:code": grid.crs,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform)[:6],
        "proj:bbox": list(grid.bounds),
    }


def cube_fields(grid: GridSpec, times: Sequence[str], bands: Sequence[str]) -> dict:
    """``cube:dimensions`` and ``cube:variables`` of a store (datacube extension 2.2):
    extents are pixel centres (the ``x``/``y`` coordinates), ``y`` runs north to south."""
    xs, ys = grid.xs(), grid.ys()
    spatial = {"type": "spatial", "reference_system": grid.epsg, "unit": "m"}
    flags = ", ".join(f"{k}: {v}" for k, v in SOURCE_MEANINGS.items())
    return {
        "cube:dimensions": {
            "time": {
                "type": "temporal",
                "extent": [min(times), max(times)] if times else [None, None],
                "values": list(times),
            },
            "band": {"type": "bands", "values": list(bands)},
            "y": {**spatial, "axis": "y", "extent": [ys[-1], ys[0]], "step": -grid.res_m},
            "x": {**spatial, "axis": "x", "extent": [xs[0], xs[-1]], "step": grid.res_m},
        },
        "cube:variables": {
            OPTICAL_VAR: {
                "type": "data",
                "dimensions": ["time", "band", "y", "x"],
                "unit": "1",
                "description": "surface reflectance: real clear Sentinel-2 or synthesis "
                "from Sentinel-1; NaN where no data",
            },
            SOURCE_VAR: {
                "type": "data",
                "dimensions": ["time", "y", "x"],
                "values": list(SOURCE_MEANINGS),
                "description": f"where each optical pixel comes from ({flags})",
            },
            UNCERTAINTY_VAR: {
                "type": "data",
                "dimensions": ["time", "y", "x"],
                "unit": "1",
                "description": UNCERTAINTY_LONG_NAME,
            },
            OBS_TIME_VAR: {
                "type": "auxiliary",
                "dimensions": ["time", "y", "x"],
                "unit": OBS_TIME_UNITS,
                "description": "when the observation each pixel shows was made (the S1 "
                "pass or the S2 scene); -1 where none",
            },
        },
    }


def output_items(
    store_name: str,
    attrs: Mapping,
    aoi_lonlat: BaseGeometry,
    bands: Sequence[str],
    time_indices: Sequence[int] | None = None,
) -> list[dict]:
    """One STAC item (dict) per time step of a store, from its attributes.

    The asset is the Zarr store (href ``..`` from the item); ``sar2opt:time_index`` says
    which slice of its ``time`` axis the item is, and ``sar2opt:s1_item_ids`` which inputs.
    """
    times = list(attrs[TIMES_ATTR])
    s1_ids = list(attrs.get(S1_IDS_ATTR) or [[] for _ in times])
    proj = projection(GridSpec.from_dict(attrs[GRID_ATTR]))
    idx = range(len(times)) if time_indices is None else time_indices
    items = []
    for t in idx:
        stamp = times[t].replace(":", "").replace("-", "")[:15]
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "stac_extensions": [PROJECTION_EXT, XARRAY_EXT],
                "id": f"{store_name.split('.')[0]}-{stamp}",
                "collection": COLLECTION,
                "geometry": mapping(aoi_lonlat),
                "bbox": list(aoi_lonlat.bounds),
                "properties": {
                    "datetime": times[t],
                    **proj,
                    "sar2opt:time_index": int(t),
                    "sar2opt:s1_item_ids": list(s1_ids[t]) if t < len(s1_ids) else [],
                    "sar2opt:bands": list(bands),
                    "sar2opt:checkpoint_sha256": attrs.get(CHECKPOINT_SHA256_ATTR),
                },
                "assets": {
                    "zarr": zarr_asset(f"{'/'.join(VARS)} (time, band, y, x) Zarr v3"),
                },
                "links": [
                    {"rel": "collection", "href": "collection.json", "type": "application/json"},
                    {"rel": "parent", "href": "collection.json", "type": "application/json"},
                    {"rel": "root", "href": "collection.json", "type": "application/json"},
                ],
            }
        )
    return items


def output_collection(
    attrs: Mapping, aoi_lonlat: BaseGeometry, bands: Sequence[str], item_files: Sequence[str]
) -> dict:
    """The collection of a store's items: its extent, the store as a datacube asset."""
    times = list(attrs[TIMES_ATTR])
    grid = GridSpec.from_dict(attrs[GRID_ATTR])
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [DATACUBE_EXT, PROJECTION_EXT, XARRAY_EXT],
        "id": COLLECTION,
        "description": "sar2opt cloud-free optical mosaics from Sentinel-1",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [list(aoi_lonlat.bounds)]},
            "temporal": {"interval": [[min(times), max(times)]] if times else [[None, None]]},
        },
        **cube_fields(grid, times, bands),
        "summaries": {"proj:code": [grid.crs]},
        "assets": {"zarr": zarr_asset(f"the mosaic store: {', '.join(VARS)}")},
        "links": [
            {"rel": "root", "href": "collection.json", "type": "application/json"},
        ]
        + [{"rel": "item", "href": f, "type": "application/geo+json"} for f in item_files],
    }


def publish_store(store: str | Path, aoi_lonlat: BaseGeometry) -> list[Path]:
    """Write (or refresh) the items of every time step and the collection; their paths."""
    import xarray as xr

    store = Path(store)
    attrs = read_attrs(store)
    bands = [str(b) for b in xr.open_zarr(store, consolidated=False)[OPTICAL_VAR]["band"].values]
    items = output_items(store.name, attrs, aoi_lonlat, bands)
    # a Zarr group too: readers listing the store meet a group, not an unknown object
    d = as_zarr_group(store / STAC_DIR, "STAC items of this store (stac/collection.json)")
    keep = {f"{it['id']}.json" for it in items} | {"collection.json", "zarr.json"}
    for old in d.glob("*.json"):  # items of a store that was renamed or cut back
        if old.name not in keep:
            old.unlink()
    paths = []
    for it in items:
        p = d / f"{it['id']}.json"
        p.write_text(json.dumps(it, indent=1))
        paths.append(p)
    collection = output_collection(attrs, aoi_lonlat, bands, [p.name for p in paths])
    (d / "collection.json").write_text(json.dumps(collection, indent=1))
    return paths
