"""Ingest a folder of the user's own GeoTIFFs into the local STAC catalog, through a manifest.

A small YAML manifest names, per file, the sensor (``s1`` | ``s2`` | ``dem``), band, date and
units; the files are warped through their own geotransform and CRS onto ONE target grid (the
UTM zone of the data centre, ``res_m`` 10 by default, snapped to the lattice), never stacked as
they are: real archives put S1 and S2 on grids tens of metres apart. A file without
georeference needs an explicit ``grid:`` (its north-west corner and pixel size), else nothing
is written. The output follows the MultiEarth ingest's conventions: S1 linear power (float32,
``vv``/``vh``), S2 uint16 DN = reflectance x 1e4 (``B02``..), optional ``CLP`` cloud
probability, ``cop-dem-glo-30``-like DEM.

Manifest::

    name: my-area             # item id prefix (default: the source folder's name)
    res_m: 10                 # target pixel size (default 10)
    epsg: 32643               # target CRS (default: UTM zone of the data centre)
    grid: {epsg: 32635, x_min: 500000, y_max: 6800000, res_m: 10}  # for un-georeferenced files
    properties: {...}         # extra STAC properties on every item
    files:
      - {path: s1/VV.tif, sensor: s1, band: vv, date: 2020-06-07T01:08:00Z, units: db,
         orbit_state: descending}
      - {path: s2/B2.tif, sensor: s2, band: B02, date: 2020-06-04, units: dn, scale: 10000}
      - {path: s2.tif, sensor: s2, band: CLP, date: 2020-06-04, band_index: 11}

Files of one sensor, date/time (and orbit state) make one item; a DEM is one file (its date
is not needed). A date without a time is
taken as 12:00 UTC and the item says ``sar2opt:time_of_day_known: false``.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject, transform_bounds

from sar2opt.catalog.cog import write_cog
from sar2opt.catalog.items import (
    DEM_NODATA,
    S1_NODATA,
    S1_POLS,
    S2_BANDS,
    S2_NODATA,
    S2_SCALE,
    dem_item,
    s1_item,
    s2_item,
    write_catalog,
)
from sar2opt.cube.clean import CLP_BAND, CLP_CLOUD_PCT, CLP_NODATA, clp_cloud
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec, utm_epsg

log = logging.getLogger(__name__)

DEFAULT_RES_M = 10.0
AOI_NAME = "aoi.geojson"  # where every file has data, for jobs/build_cube.py --aoi
S2_MASK_BANDS = ("QA60", "SCL", CLP_BAND)  # categorical: warped nearest, not bilinear
SENSORS = ("s1", "s2", "dem")
UNITS = {"s1": ("db", "linear"), "s2": ("dn", "reflectance"), "dem": ("m",)}
_TOP_KEYS = {"files", "name", "res_m", "epsg", "grid", "properties"}
_GRID_KEYS = {"epsg", "x_min", "y_max", "res_m"}
_FILE_KEYS = {
    "path", "sensor", "band", "date", "units", "scale", "band_index", "nodata",
    "orbit_state", "platform",
}  # fmt: skip
# Crude pixel cloud test used only to fill eo:cloud_cover when no cloud band is trusted.
_CLOUD_BRIGHTNESS = 0.18
_CLOUD_WHITENESS = 0.7


# ---------------------------------------------------------------- shared with multiearth.py


def read_band(path: str | Path, index: int = 1) -> np.ndarray:
    """Band ``index`` (1-based) of ``path``; silent about a missing georeference (the caller
    decides what grid the pixels lie on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(index)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB backscatter to linear power (float32), non-finite values become NaN."""
    db = np.asarray(db, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isfinite(db), 10.0 ** (db / 10.0), np.nan).astype(np.float32)


def estimate_cloud_cover(bands: Mapping[str, np.ndarray]) -> float | None:
    """Percent of bright, white pixels in B02-B04 (DN x 1e4): an estimate for archives whose
    cloud flags cannot be trusted (QA60 all zeros)."""
    if not all(b in bands for b in ("B02", "B03", "B04")):
        return None
    rgb = np.stack([np.asarray(bands[b], np.float32) / S2_SCALE for b in ("B02", "B03", "B04")])
    valid = np.all(rgb > 0, axis=0)
    if not valid.any():
        return None
    bright = rgb.mean(axis=0)
    white = rgb.min(axis=0) / np.maximum(rgb.max(axis=0), 1e-6)
    cloud = (bright > _CLOUD_BRIGHTNESS) & (white > _CLOUD_WHITENESS) & valid
    return 100.0 * float(cloud.sum()) / float(valid.sum())


def write_s1(
    cogs: Path, item_id: str, dt: datetime, grid: GridSpec, linear: Mapping[str, np.ndarray],
    **item_kw: Any,
) -> dict:  # fmt: skip
    """COGs of linear-power ``vv``/``vh`` arrays on ``grid`` and their ``sentinel-1-rtc`` item."""
    hrefs = {
        pol: write_cog(cogs / f"{item_id}_{pol}.tif", arr, grid, S1_NODATA, "float32")
        for pol, arr in sorted(linear.items())
    }
    return s1_item(item_id, dt, grid, hrefs, **item_kw)


def write_s2(
    cogs: Path, item_id: str, dt: datetime, grid: GridSpec, dn: Mapping[str, np.ndarray],
    **item_kw: Any,
) -> dict:  # fmt: skip
    """COGs of S2 DN arrays (and QA60 / CLP masks) on ``grid`` and their ``sentinel-2-l2a`` item."""
    hrefs = {}
    for name, arr in sorted(dn.items()):
        if name == CLP_BAND:
            nodata, dtype = CLP_NODATA, "uint8"
        elif name == "SCL":
            nodata, dtype = 0, "uint8"
        else:
            nodata, dtype = (None if name == "QA60" else S2_NODATA), "uint16"
        if nodata is None:  # QA60: 0 = no bit set, the only value left where nothing was seen
            arr = np.nan_to_num(np.asarray(arr, np.float32), nan=0.0)
        hrefs[name] = write_cog(cogs / f"{item_id}_{name}.tif", arr, grid, nodata, dtype)
    return s2_item(item_id, dt, grid, hrefs, **item_kw)


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    """One manifest row: where the pixels are and what they mean."""

    path: Path
    sensor: str
    band: str
    dt: datetime
    time_known: bool
    units: str
    scale: float = S2_SCALE
    band_index: int = 1
    nodata: float | None = None
    orbit_state: str | None = None
    platform: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, checked manifest (all files exist; bands and units are known)."""

    name: str
    res_m: float
    epsg: int | None
    grid: Mapping[str, float] | None
    files: tuple[FileEntry, ...]
    properties: Mapping[str, Any] = field(default_factory=dict)


def _band_name(sensor: str, band: str) -> str:
    """Canonical band: ``vv``/``vh`` for S1; ``B02``.., ``CLP``, ``QA60``, ``SCL`` for S2."""
    b = str(band).strip()
    if sensor == "s1":
        return b.lower()
    if sensor == "dem":
        return "dem"
    u = b.upper()
    if len(u) == 2 and u[0] == "B" and u[1].isdigit():
        u = f"B0{u[1]}"
    return u


def _parse_dt(value: Any, where: str) -> tuple[datetime, bool]:
    if isinstance(value, datetime):
        dt, known = value, True
    elif isinstance(value, date):
        dt, known = datetime(value.year, value.month, value.day, 12), False
    else:
        s = str(value).strip()
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise CatalogError(f"{where}: date {s!r} is not ISO (YYYY-MM-DD[THH:MM:SSZ])") from None
        known = "T" in s or " " in s
        if not known:
            dt = dt.replace(hour=12)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc), known


def _unknown_keys(d: Mapping, allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise CatalogError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _entry(src_dir: Path, row: Any, i: int) -> FileEntry:
    where = f"manifest files[{i}]"
    if not isinstance(row, Mapping):
        raise CatalogError(f"{where}: expected a mapping with path, sensor, band, date")
    _unknown_keys(row, _FILE_KEYS, where)
    for key in ("path", "sensor", "band"):
        if key not in row:
            raise CatalogError(f"{where}: missing key {key!r}")
    path = src_dir / str(row["path"])
    where = f"manifest files[{i}] ({row['path']})"
    if not path.is_file():
        raise CatalogError(f"{where}: file not found under {src_dir}")
    sensor = str(row["sensor"]).lower()
    if sensor not in SENSORS:
        raise CatalogError(f"{where}: unknown sensor {row['sensor']!r}; use one of {SENSORS}")
    band = _band_name(sensor, row["band"])
    if sensor == "s1" and band not in S1_POLS:
        raise CatalogError(f"{where}: unknown S1 band {row['band']!r}; use one of {list(S1_POLS)}")
    if sensor == "s2" and band not in S2_BANDS and band not in S2_MASK_BANDS:
        raise CatalogError(
            f"{where}: unknown S2 band {row['band']!r}; use one of {[*S2_BANDS, *S2_MASK_BANDS]}"
        )
    if "date" not in row and sensor != "dem":
        raise CatalogError(f"{where}: missing key 'date'")
    dt, known = _parse_dt(row.get("date", "2021-04-22"), where)
    spectral = sensor == "s1" or (sensor == "s2" and band not in S2_MASK_BANDS)
    units = str(row.get("units") or ("m" if sensor == "dem" else "")).lower()
    if spectral and units not in UNITS[sensor]:
        raise CatalogError(
            f"{where}: set units to one of {list(UNITS[sensor])} (got {row.get('units')!r})"
        )
    if sensor == "dem" and units not in UNITS["dem"]:
        raise CatalogError(f"{where}: DEM units must be 'm', got {row.get('units')!r}")
    orbit = row.get("orbit_state")
    if orbit is not None and (sensor != "s1" or orbit not in ("ascending", "descending")):
        raise CatalogError(f"{where}: orbit_state is ascending|descending, S1 only")
    try:
        scale = float(row.get("scale", S2_SCALE))
        band_index = int(row.get("band_index", 1))
        nodata = None if row.get("nodata") is None else float(row["nodata"])
    except (TypeError, ValueError) as e:
        raise CatalogError(f"{where}: {e}") from None
    if scale <= 0 or band_index < 1:
        raise CatalogError(f"{where}: scale must be > 0 and band_index >= 1 (1-based)")
    return FileEntry(
        path, sensor, band, dt, known, units, scale, band_index, nodata,
        None if orbit is None else str(orbit), row.get("platform"),
    )  # fmt: skip


def parse_manifest(manifest: Mapping[str, Any], src_dir: str | Path) -> Manifest:
    """Check a manifest (already loaded from YAML) against ``src_dir``; ``CatalogError`` with
    one line naming the first problem."""
    src_dir = Path(src_dir)
    if not isinstance(manifest, Mapping):
        raise CatalogError("manifest: expected a mapping with a 'files' list")
    _unknown_keys(manifest, _TOP_KEYS, "manifest")
    rows = manifest.get("files")
    if not isinstance(rows, list) or not rows:
        raise CatalogError("manifest: 'files' must be a non-empty list")
    grid = manifest.get("grid")
    if grid is not None:
        if not isinstance(grid, Mapping):
            raise CatalogError("manifest grid: expected {epsg, x_min, y_max, res_m}")
        _unknown_keys(grid, _GRID_KEYS, "manifest grid")
        missing = sorted(_GRID_KEYS - set(grid))
        if missing:
            raise CatalogError(f"manifest grid: missing {missing}")
    files = tuple(_entry(src_dir, row, i) for i, row in enumerate(rows))
    res_m = float(manifest.get("res_m", DEFAULT_RES_M))
    if res_m <= 0:
        raise CatalogError(f"manifest: res_m must be > 0, got {res_m}")
    epsg = manifest.get("epsg")
    return Manifest(
        name=str(manifest.get("name") or src_dir.name),
        res_m=res_m,
        epsg=None if epsg is None else int(epsg),
        grid=None if grid is None else {k: float(v) for k, v in grid.items()},
        files=files,
        properties=dict(manifest.get("properties") or {}),
    )


def load_manifest(path: str | Path, src_dir: str | Path) -> Manifest:
    """Read and check a YAML manifest."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"manifest not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CatalogError(f"manifest {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_manifest(data, src_dir)


# ---------------------------------------------------------------- grids and warping


@dataclass(frozen=True)
class SourceGeo:
    """Where a file's pixels lie: its CRS, transform and size (declared or read)."""

    crs: str
    transform: Affine
    width: int
    height: int
    count: int
    nodata: float | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        xs = [t.c, t.c + t.a * self.width]
        ys = [t.f, t.f + t.e * self.height]
        return (min(xs), min(ys), max(xs), max(ys))


def source_geo(entry: FileEntry, grid: Mapping[str, float] | None) -> SourceGeo:
    """The file's georeference, or the manifest's ``grid`` when it has none (else an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(entry.path) as src:
            crs, tf = src.crs, src.transform
            w, h, count, nodata = src.width, src.height, src.count, src.nodatavals[0]
    if entry.band_index > count:
        raise CatalogError(f"{entry.path.name}: band_index {entry.band_index} > its {count} bands")
    if crs is None or tf == Affine.identity():
        if grid is None:
            raise CatalogError(
                f"{entry.path.name} has no georeference (no CRS/transform): set grid: "
                "{epsg, x_min, y_max, res_m} in the manifest (its north-west corner and "
                "pixel size)"
            )
        r = grid["res_m"]
        crs = f"EPSG:{int(grid['epsg'])}"
        tf = Affine(r, 0.0, grid["x_min"], 0.0, -r, grid["y_max"])
        return SourceGeo(crs, tf, w, h, count, nodata)
    return SourceGeo(crs.to_string(), tf, w, h, count, nodata)


def target_grid(geos: list[SourceGeo], res_m: float, epsg: int | None = None) -> GridSpec:
    """ONE grid covering every file: in ``epsg`` (default the UTM zone of the data centre),
    ``res_m`` pixels, snapped outwards to the lattice."""
    ll = [transform_bounds(g.crs, "EPSG:4326", *g.bounds, densify_pts=21) for g in geos]
    if epsg is None:
        west, south = min(b[0] for b in ll), min(b[1] for b in ll)
        east, north = max(b[2] for b in ll), max(b[3] for b in ll)
        epsg = utm_epsg((west + east) / 2, (south + north) / 2)
    dst = f"EPSG:{epsg}"
    bs = [transform_bounds(g.crs, dst, *g.bounds, densify_pts=21) for g in geos]
    union = (
        min(b[0] for b in bs),
        min(b[1] for b in bs),
        max(b[2] for b in bs),
        max(b[3] for b in bs),
    )
    return GridSpec.covering(epsg, res_m, union)


def warp(array: np.ndarray, geo: SourceGeo, grid: GridSpec, resampling: Resampling) -> np.ndarray:
    """``array`` (float, NaN = no data) warped through its georeference onto ``grid``; NaN
    where the source does not reach."""
    return warp_array(array, geo.transform, geo.crs, grid, resampling)


def warp_array(
    array: np.ndarray,
    transform: Affine,
    crs,
    grid: GridSpec,
    resampling: Resampling,
    dtype: str = "float32",
) -> np.ndarray:
    """``array`` (float, NaN = no data) on ``transform``/``crs`` warped onto ``grid`` as
    ``dtype``; NaN where the source does not reach (also evaluate's label rasters)."""
    out = np.full(grid.shape, np.nan, dtype=dtype)
    reproject(
        source=np.asarray(array, dtype=dtype),
        destination=out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return out


def _physical(entry: FileEntry, geo: SourceGeo) -> np.ndarray:
    """The file's band in the catalog's units (float32, NaN = no data): S1 linear power,
    S2 DN x 1e4, CLP percent, DEM metres."""
    raw = read_band(entry.path, entry.band_index).astype(np.float32)
    nodata = entry.nodata if entry.nodata is not None else geo.nodata
    if nodata is None and entry.sensor == "s2" and entry.band not in S2_MASK_BANDS:
        nodata = S2_NODATA  # S2 DN 0 is no data
    bad = ~np.isfinite(raw)
    if nodata is not None and np.isfinite(nodata):
        bad |= raw == np.float32(nodata)
    raw[bad] = np.nan
    if entry.sensor == "s1":
        return db_to_linear(raw) if entry.units == "db" else raw
    if entry.sensor == "s2" and entry.band not in S2_MASK_BANDS:
        factor = S2_SCALE if entry.units == "reflectance" else S2_SCALE / entry.scale
        return raw * np.float32(factor)
    return raw


# ---------------------------------------------------------------- ingest


def _item_key(e: FileEntry) -> tuple[str, datetime, str]:
    return (e.sensor, e.dt, e.orbit_state or "")


def _item_id(name: str, key: tuple[str, datetime, str]) -> str:
    sensor, dt, orbit = key
    tag = {"s1": "S1", "s2": "S2", "dem": "DEM"}[sensor]
    stamp = dt.strftime("%Y%m%dT%H%M%S")
    suffix = f"_{orbit[:3].upper()}" if orbit else ""
    return f"{tag}_{name}_{stamp}{suffix}".replace(" ", "_")


def clp_cloud_cover(clp: np.ndarray) -> float | None:
    """Percent of valid pixels that the cube's CLP rule calls cloud (``clean.clp_cloud``)."""
    valid = np.isfinite(clp)
    if not valid.any():
        return None
    return 100.0 * float(clp_cloud(clp[valid]).sum()) / float(valid.sum())


def ingest_manifest(manifest: Manifest, out_dir: str | Path) -> list[dict]:
    """Warp every file of ``manifest`` onto one grid and write COGs + a catalog in ``out_dir``.

    Every file is opened and checked (georeference, band index, no band twice in one item)
    before anything is written, so an error leaves ``out_dir`` untouched.
    """
    out_dir = Path(out_dir)
    geos = [source_geo(e, manifest.grid) for e in manifest.files]
    groups: dict[tuple[str, datetime, str], list[tuple[FileEntry, SourceGeo]]] = defaultdict(list)
    for e, g in zip(manifest.files, geos, strict=True):
        group = groups[_item_key(e)]
        if any(o.band == e.band for o, _ in group):
            raise CatalogError(
                f"{e.path.name}: band {e.band} of {e.sensor} {e.dt:%Y-%m-%dT%H:%M:%SZ} is given "
                "twice; give the files distinct dates (or orbit_state)"
            )
        group.append((e, g))
    epsg = manifest.epsg if manifest.epsg is not None else (
        int(manifest.grid["epsg"]) if manifest.grid is not None else None
    )  # fmt: skip
    grid = target_grid(geos, manifest.res_m, epsg)
    log.info("ingest %s: %d files onto %r", manifest.name, len(geos), grid)
    cogs = out_dir / "cogs"
    items: list[dict] = []
    for key, files in sorted(groups.items()):
        sensor, dt, orbit = key
        item_id = _item_id(manifest.name, key)
        arrays = {
            e.band: warp(
                _physical(e, g), g, grid,
                Resampling.nearest if e.band in S2_MASK_BANDS else Resampling.bilinear,
            )
            for e, g in files
        }  # fmt: skip
        first = files[0][0]
        props = {
            "sar2opt:source": manifest.name,
            "sar2opt:time_of_day_known": all(e.time_known for e, _ in files),
            **manifest.properties,
        }
        if sensor == "s1":
            items.append(
                write_s1(
                    cogs, item_id, dt, grid, arrays,
                    platform=first.platform or "SENTINEL-1",
                    orbit_state=orbit or None,
                    extra_properties={**props, "sar2opt:units_in": first.units},
                )
            )  # fmt: skip
        elif sensor == "s2":
            if CLP_BAND in arrays:
                cover, method = clp_cloud_cover(arrays[CLP_BAND]), f"CLP > {CLP_CLOUD_PCT:g}"
            else:
                cover, method = estimate_cloud_cover(arrays), "brightness estimate"
            items.append(
                write_s2(
                    cogs, item_id, dt, grid, arrays,
                    cloud_cover=cover,
                    platform=first.platform or "Sentinel-2",
                    extra_properties={**props, "sar2opt:cloud_cover_method": method},
                )
            )  # fmt: skip
        else:
            href = write_cog(cogs / f"{item_id}.tif", arrays["dem"], grid, DEM_NODATA, "float32")
            items.append(dem_item(item_id, grid, href, extra_properties=props))
    write_catalog(items, out_dir)
    write_aoi(aoi_grid_bounds(geos, grid), out_dir / AOI_NAME, manifest.name)
    log.info("ingested %d items into %s", len(items), out_dir)
    return items


def common_footprint(geos: list[SourceGeo], grid: GridSpec):
    """Where every file has pixels: the intersection of their footprints in ``grid``'s CRS
    (a shapely polygon; edges densified so a reprojected edge keeps its bend)."""
    from pyproj import Transformer
    from shapely.geometry import Polygon

    poly = None
    for g in geos:
        xmin, ymin, xmax, ymax = g.bounds
        t = np.linspace(0.0, 1.0, 21)
        xs = np.concatenate([xmin + (xmax - xmin) * t, np.full(21, xmax),
                             xmax - (xmax - xmin) * t, np.full(21, xmin)])  # fmt: skip
        ys = np.concatenate([np.full(21, ymin), ymin + (ymax - ymin) * t,
                             np.full(21, ymax), ymax - (ymax - ymin) * t])  # fmt: skip
        tx, ty = Transformer.from_crs(g.crs, grid.crs, always_xy=True).transform(xs, ys)
        fp = Polygon(zip(tx, ty, strict=True))
        poly = fp if poly is None else poly.intersection(fp)
    return poly


def aoi_grid_bounds(geos: list[SourceGeo], grid: GridSpec) -> tuple[float, ...]:
    """Lon/lat bounds of an AOI whose cube grid (``grid_for_lonlat_bounds``, what
    ``jobs/build_cube.py`` derives) lies wholly where every file has data: the common
    footprint's box, shrunk a pixel at a time until the lon/lat round trip (which grows a box
    away from the UTM central meridian) fits. So a cube on it has no empty rim."""
    from shapely.geometry import box

    from sar2opt.grid import grid_for_lonlat_bounds

    common = common_footprint(geos, grid)
    if common is None or common.is_empty:
        raise CatalogError("the files do not overlap: no common footprint for an AOI")
    x0, y0, x1, y1 = common.bounds
    r = grid.res_m
    ll = None
    for k in range(int(min(x1 - x0, y1 - y0) / r / 2)):
        inset = (x0 + k * r, y0 + k * r, x1 - k * r, y1 - k * r)
        ll = transform_bounds(grid.crs, "EPSG:4326", *inset, densify_pts=21)
        cube = grid_for_lonlat_bounds(ll, r, grid.epsg)
        if common.buffer(1e-6).contains(box(*cube.bounds)):
            return ll
    raise CatalogError("the files' common footprint is too small for an AOI")


def write_aoi(bounds_lonlat: tuple[float, ...], path: Path, name: str) -> Path:
    """A lon/lat rectangle as a GeoJSON AOI (for ``jobs/build_cube.py --aoi``)."""
    import json

    w, s, e, n = (round(float(v), 9) for v in bounds_lonlat)
    doc = {
        "type": "Feature",
        "properties": {"name": name},
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def ingest(src_dir: str | Path, manifest_path: str | Path, out_dir: str | Path) -> list[dict]:
    """``sar2opt catalog ingest``: load the manifest, check it, warp, write the catalog."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise CatalogError(f"source folder not found: {src_dir}")
    return ingest_manifest(load_manifest(manifest_path, src_dir), out_dir)
