"""Publish each time step of an output store as a STAC item, so mosaics are searchable.

Items live inside the store (``<store>/stac/<id>.json`` plus ``collection.json``) with
relative hrefs, so the store can be moved or renamed (the job renames ``.partial`` into
place) and served by the same local STAC server as the inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from sar2opt.infer.store import (
    CHECKPOINT_SHA256_ATTR,
    GRID_ATTR,
    OPTICAL_VAR,
    S1_IDS_ATTR,
    STAC_DIR,
    TIMES_ATTR,
    VARS,
    as_zarr_group,
    read_attrs,
)

COLLECTION = "sar2opt-mosaic"


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
    epsg = int(attrs[GRID_ATTR]["epsg"])
    idx = range(len(times)) if time_indices is None else time_indices
    items = []
    for t in idx:
        stamp = times[t].replace(":", "").replace("-", "")[:15]
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "stac_extensions": [
                    "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
                ],
                "id": f"{store_name.split('.')[0]}-{stamp}",
                "collection": COLLECTION,
                "geometry": mapping(aoi_lonlat),
                "bbox": list(aoi_lonlat.bounds),
                "properties": {
                    "datetime": times[t],
                    "proj:code": f"EPSG:{epsg}",
                    "sar2opt:time_index": int(t),
                    "sar2opt:s1_item_ids": list(s1_ids[t]) if t < len(s1_ids) else [],
                    "sar2opt:bands": list(bands),
                    "sar2opt:checkpoint_sha256": attrs.get(CHECKPOINT_SHA256_ATTR),
                },
                "assets": {
                    "zarr": {
                        "href": "..",
                        "type": "application/vnd+zarr",
                        "roles": ["data"],
                        "title": f"{'/'.join(VARS)} (time, band, y, x) Zarr v3",
                    }
                },
                "links": [{"rel": "collection", "href": "collection.json"}],
            }
        )
    return items


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
    times = list(attrs[TIMES_ATTR])
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": "sar2opt cloud-free optical mosaics from Sentinel-1",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [list(aoi_lonlat.bounds)]},
            "temporal": {"interval": [[min(times), max(times)]] if times else [[None, None]]},
        },
        "links": [{"rel": "item", "href": p.name} for p in paths],
    }
    (d / "collection.json").write_text(json.dumps(collection, indent=1))
    return paths
