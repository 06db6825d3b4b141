"""Areas of interest: GeoJSON (CRS84) polygons read with clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from sar2opt.errors import AOIError
from sar2opt.grid import GridSpec, grid_for_lonlat_bounds


def load_aoi(path: str | Path) -> BaseGeometry:
    """Read a GeoJSON Polygon/MultiPolygon (bare, Feature or FeatureCollection) in lon/lat."""
    path = Path(path)
    if not path.is_file():
        raise AOIError(f"AOI file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AOIError(f"AOI file {path} is not valid JSON: {e}") from None
    geoms = _geometries(doc)
    if not geoms:
        raise AOIError(f"AOI file {path} holds no geometry")
    try:
        parts = [shape(g) for g in geoms]
    except Exception as e:  # shapely raises several types for malformed coordinates
        raise AOIError(f"AOI file {path} has a malformed geometry: {e}") from None
    for p in parts:
        if p.geom_type not in ("Polygon", "MultiPolygon"):
            raise AOIError(f"AOI must be Polygon or MultiPolygon, {path} has {p.geom_type}")
    from shapely.ops import unary_union

    geom = unary_union(parts) if len(parts) > 1 else parts[0]
    if geom.is_empty:
        raise AOIError(f"AOI in {path} is empty")
    if geom.area == 0:  # a ring whose points lie on a line, or repeat one point
        raise AOIError(f"AOI in {path} has zero area (its polygon is degenerate)")
    if not geom.is_valid:
        geom = geom.buffer(0)
    if geom.is_empty or geom.area == 0:
        raise AOIError(f"AOI in {path} is empty")
    w, s, e, n = geom.bounds
    if w < -180 or e > 180 or s < -90 or n > 90:
        raise AOIError(f"AOI in {path} is not in lon/lat degrees (bounds {geom.bounds})")
    return geom


def _geometries(doc: object) -> list[dict]:
    if not isinstance(doc, dict) or "type" not in doc:
        raise AOIError("AOI is not a GeoJSON object (no 'type')")
    t = doc["type"]
    if t == "FeatureCollection":
        return [f["geometry"] for f in doc.get("features", []) if f.get("geometry")]
    if t == "Feature":
        return [doc["geometry"]] if doc.get("geometry") else []
    if "coordinates" in doc:
        return [doc]
    raise AOIError(f"AOI GeoJSON type {t!r} is not supported")


def grid_for_aoi(aoi: BaseGeometry, res_m: float, epsg: int | None = None) -> GridSpec:
    """The shared pixel grid over an AOI: UTM zone of its centre unless ``epsg`` is given."""
    return grid_for_lonlat_bounds(aoi.bounds, res_m, epsg)
