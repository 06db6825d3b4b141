"""STAC search: the same code path for the local catalog, Planetary Computer and Earth Search.

Items are returned as plain dicts (the API's JSON) rather than pystac objects: pystac >= 1.15
rewrites ``proj:epsg`` into ``proj:code`` on read, and stackstac needs the EPSG.
"""

from __future__ import annotations

from collections.abc import Sequence

from shapely.geometry.base import BaseGeometry

from sar2opt import profiles
from sar2opt.config import CatalogSpec
from sar2opt.errors import CatalogError


def search_items(
    catalog: CatalogSpec,
    collection: str,
    bbox_lonlat: Sequence[float],
    start: str,
    end: str,
    *,
    max_items: int | None = None,
) -> list[dict]:
    """Items of ``collection`` meeting ``bbox_lonlat`` from ``start`` to ``end`` (whole days).

    Raises ``CatalogError`` with one clear line when the endpoint cannot be reached or answers
    with an error, so jobs fail before any output is written.
    """
    import requests
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    from sar2opt.credentials import client_args

    datetime = f"{_day_start(start)}/{_day_end(end)}"
    try:
        client = Client.open(**client_args(catalog.stac_url), timeout=catalog.timeout_s)
        search = client.search(
            collections=[collection],
            bbox=list(bbox_lonlat),
            datetime=datetime,
            max_items=max_items,
            limit=100,
        )
        items = [normalise_item(it) for it in search.items_as_dicts()]
    except (requests.ConnectionError, requests.Timeout) as e:
        raise CatalogError(
            f"STAC catalog {catalog.stac_url} is unreachable ({type(e).__name__})"
        ) from None
    except APIError as e:
        # pystac-client wraps connection failures in APIError: tell them apart by message
        text = str(e)
        if any(k in text for k in _UNREACHABLE):
            raise CatalogError(f"STAC catalog {catalog.stac_url} is unreachable") from None
        raise CatalogError(
            f"STAC catalog {catalog.stac_url} answered an error: {text[:200]}"
        ) from None
    except requests.RequestException as e:
        raise CatalogError(f"STAC catalog {catalog.stac_url} failed: {e}") from None
    items.sort(key=lambda it: (it["properties"].get("datetime") or "", it["id"]))
    return items


_UNREACHABLE = (
    "Failed to establish a new connection",
    "Connection refused",
    "Max retries exceeded",
    "timed out",
    "Name or service not known",
    "Temporary failure in name resolution",
)


def search_aoi(
    catalog: CatalogSpec, collection: str, aoi: BaseGeometry, start: str, end: str
) -> list[dict]:
    """``search_items`` over the AOI's bbox, keeping items whose footprint meets the polygon."""
    items = search_items(catalog, collection, aoi.bounds, start, end)
    return [it for it in items if item_intersects(it, aoi)]


def search_s1(
    catalog: CatalogSpec, aoi: BaseGeometry, start: str, end: str, *, required: bool = True
) -> list[dict]:
    """Sentinel-1 items over the AOI; a clear ``CatalogError`` when there are none and
    ``required`` (else none: nothing new to monitor).

    Radar-geometry collections (GRD) are refused before searching.
    """
    profiles.require_geocoded(profiles.profile_for(catalog.stac_url, catalog.s1_collection))
    items = search_aoi(catalog, catalog.s1_collection, aoi, start, end)
    if not items and required:
        w, s, e, n = (round(v, 4) for v in aoi.bounds)
        raise CatalogError(
            f"no Sentinel-1 acquisitions ({catalog.s1_collection}) intersect the AOI "
            f"({w}, {s}, {e}, {n}) between {start} and {end} in {catalog.stac_url}"
        )
    return items


def search_s2_near(
    catalog: CatalogSpec, aoi: BaseGeometry, start: str, end: str, max_dt_days: float
) -> list[dict]:
    """S2 items within ``max_dt_days`` of some day from ``start`` to ``end`` (the window
    widened on both sides): what can stand in for a synthesis; none when ``max_dt_days`` <= 0."""
    if max_dt_days <= 0:
        return []
    return search_aoi(
        catalog,
        catalog.s2_collection,
        aoi,
        shift_day(start, -max_dt_days),
        shift_day(end, max_dt_days),
    )


def items_near(items: Sequence[dict], iso: str, max_dt_days: float) -> list[dict]:
    """The ``items`` dated within ±``max_dt_days`` of ``iso``."""
    import pandas as pd

    t0 = pd.Timestamp(iso)
    day = pd.Timedelta(days=1)
    return [
        it
        for it in items
        if abs((pd.Timestamp(it["properties"]["datetime"]) - t0) / day) <= max_dt_days
    ]


def footprint(items: Sequence[dict]) -> BaseGeometry | None:
    """Union of the items' footprints (lon/lat); None when an item has no geometry."""
    from shapely.geometry import shape
    from shapely.ops import unary_union

    geoms = [it.get("geometry") for it in items]
    if any(g is None for g in geoms):
        return None
    return unary_union([shape(g) for g in geoms])


def shift_day(day: str, days: float) -> str:
    """``day`` (YYYY-MM-DD...) moved by ``days``, rounded away from zero to whole days."""
    import datetime as dt
    import math

    d = dt.date.fromisoformat(day[:10]) + dt.timedelta(
        days=math.copysign(math.ceil(abs(days)), days)
    )
    return d.isoformat()


def normalise_item(item: dict) -> dict:
    """Give every item (and asset) an integer ``proj:epsg``, which stackstac reads.

    STAC 1.1 catalogs write ``proj:code`` ("EPSG:32721") instead; Planetary Computer writes
    9-element ``proj:transform``s. See ``sar2opt.profiles.normalise_item``.
    """
    return profiles.normalise_item(item)


def item_intersects(item: dict, aoi: BaseGeometry) -> bool:
    """Does the item's footprint meet the AOI (lon/lat)?

    Uses the geometry (antimeridian items are split MultiPolygons); without one, the bbox,
    read as crossing 180° when west > east.
    """
    from shapely.geometry import box, shape

    if item.get("geometry"):
        return shape(item["geometry"]).intersects(aoi)
    bbox = item.get("bbox")
    if not bbox:
        return True
    w, s, e, n = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else tuple(bbox)
    if w <= e:
        return box(w, s, e, n).intersects(aoi)
    return box(w, s, 180.0, n).intersects(aoi) or box(-180.0, s, e, n).intersects(aoi)


def _day_start(s: str) -> str:
    return s if "T" in s else f"{s}T00:00:00Z"


def _day_end(s: str) -> str:
    return s if "T" in s else f"{s}T23:59:59Z"
