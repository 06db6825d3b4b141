"""Export a mosaic store to Cloud-Optimized GeoTIFFs and STAC items, for GIS tools.

Why: GDAL 3.10 (the rasterio wheels, so QGIS of that vintage) cannot read the sharded Zarr v3
store ("Unsupported codec: sharding_indexed"); a COG opens everywhere. Data flow: mosaic
Zarr -> export.

Layout, per time step of each store (one folder per zone store for a multi-zone mosaic)::

    <out>/[<zone>/]<item id>/<band>.tif, source.tif, uncertainty.tif, <item id>.json
    <out>/[<zone>/]collection.json

One single-band COG per band and per quality layer: the layers differ in type (``source``
is uint8 flags, nearest-neighbour overviews; the others float32, averaged), and one band per
asset is what STAC loaders (odc-stac, stackstac) and the Sentinel-2 catalogs expect; a GIS
stacks them as it likes (``gdalbuildvrt -separate``). Each COG: 512-px internal tiles,
overviews, DEFLATE with the floating-point / horizontal predictor (lossless), nodata set
(NaN, and 0 for ``source``), CRS and transform of the store's ``GridSpec``.

Memory stays one block of the store: blocks are read from Zarr and written with rasterio
windowed writes into a tiled temporary GeoTIFF, which GDAL's COG driver then copies
(overviews built from the file, not from memory). Blocks with no data are not written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sar2opt.catalog.items import COG_TYPE, EXT_EO, EXT_PROJ, EXT_RASTER, S2_BANDS, raster_band
from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer.composite import SOURCE_MEANINGS, SOURCE_NODATA
from sar2opt.infer.publish import projection
from sar2opt.infer.store import (
    BLOCK_PX_ATTR,
    GRID_ATTR,
    OPTICAL_VAR,
    SOURCE_VAR,
    TIMES_ATTR,
    UNCERTAINTY_LONG_NAME,
    UNCERTAINTY_VAR,
    StoreMissingError,
    partial_path,
    read_attrs,
    time_coords,
    zone_stores,
)

COLLECTION = "sar2opt-mosaic-cog"
TILE_PX = 512
#: GDAL COG driver options shared by every layer (``OVERVIEW_RESAMPLING`` per layer).
COG_OPTIONS = {
    "BLOCKSIZE": str(TILE_PX),
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "YES",  # 3 (floating point) for float32, 2 (horizontal) for integers
    "LEVEL": "6",
    "OVERVIEWS": "AUTO",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "2",
}


class ExportError(Sar2OptError):
    """The export cannot be done as asked (no such time step, an output in the way)."""


@dataclass(frozen=True)
class Layer:
    """One single-band COG of a time step: a band of ``optical`` or a quality layer."""

    name: str  # asset key and file stem
    var: str
    band: int | None  # index into optical's band axis; None for (time, y, x) variables
    dtype: str
    nodata: float | int
    resampling: str  # of the overviews


def layers(bands: Sequence[str]) -> list[Layer]:
    """The COGs of one time step: every optical band, then ``source`` and ``uncertainty``."""
    out = [Layer(b, OPTICAL_VAR, i, "float32", math.nan, "AVERAGE") for i, b in enumerate(bands)]
    out.append(Layer(SOURCE_VAR, SOURCE_VAR, None, "uint8", SOURCE_NODATA, "NEAREST"))
    out.append(Layer(UNCERTAINTY_VAR, UNCERTAINTY_VAR, None, "float32", math.nan, "AVERAGE"))
    return out


def select_times(times: Sequence[str], wanted: Sequence[str] | None) -> list[int]:
    """Indices of the time steps asked for: all when none is; each ``wanted`` is a store time
    (any ISO form) or a date (``YYYY-MM-DD``) that must name exactly one time step."""
    if not wanted:
        return list(range(len(times)))
    stamps = time_coords(times)
    days = [str(s)[:10] for s in stamps]
    out: list[int] = []
    for w in wanted:
        try:
            at = time_coords([w])[0]
        except (ValueError, TypeError) as e:
            raise ExportError(f"--time {w} is not a date or time") from e
        hits = [i for i, s in enumerate(stamps) if s == at]
        if not hits and len(w) == 10:
            hits = [i for i, d in enumerate(days) if d == w]
        if len(hits) != 1:
            what = "is not a time step" if not hits else "names several time steps"
            raise ExportError(f"--time {w} {what} of the store (it has {', '.join(times)})")
        out.extend(i for i in hits if i not in out)
    return out


def item_id(store: Path, time_iso: str) -> str:
    """The same id as the store's own STAC item of that time step (``publish``)."""
    stamp = time_iso.replace(":", "").replace("-", "")[:15]
    return f"{store.name.split('.')[0]}-{stamp}"


def _blocks(grid: GridSpec, block_px: int) -> Iterator[tuple[int, int, int, int]]:
    """``(row0, col0, row1, col1)`` of the store's blocks (its chunks), row by row."""
    h, w = grid.shape
    for r0 in range(0, h, block_px):
        for c0 in range(0, w, block_px):
            yield r0, c0, min(r0 + block_px, h), min(c0 + block_px, w)


def _write_time_step(store: Path, t: int, grid: GridSpec, block_px: int, folder: Path) -> dict:
    """The COGs of time step ``t`` in ``folder``; their layers by asset name."""
    import rasterio
    import rasterio.shutil
    import zarr
    from rasterio.windows import Window

    g = zarr.open_group(str(store), mode="r", use_consolidated=False)
    bands = [str(b) for b in g["band"][:]]
    todo = layers(bands)
    tmp = {ly.name: folder / f".{ly.name}.tmp.tif" for ly in todo}
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": TILE_PX,
        "blockysize": TILE_PX,
        "compress": "ZSTD",
        "zstd_level": 1,
        "bigtiff": "IF_SAFER",
        "sparse_ok": True,  # blocks never written read as nodata, and cost nothing
    }
    dsts = {
        ly.name: rasterio.open(tmp[ly.name], "w", **profile, dtype=ly.dtype, nodata=ly.nodata)
        for ly in todo
    }
    try:
        for r0, c0, r1, c1 in _blocks(grid, block_px):
            src = np.asarray(g[SOURCE_VAR][t, r0:r1, c0:c1])
            if not (src != SOURCE_NODATA).any():
                continue  # nothing here (outside the AOI, no acquisition): stays nodata
            win = Window(c0, r0, c1 - c0, r1 - r0)
            opt = np.asarray(g[OPTICAL_VAR][t, :, r0:r1, c0:c1])
            for ly in todo:
                if ly.var == OPTICAL_VAR:
                    data = opt[ly.band]
                elif ly.var == SOURCE_VAR:
                    data = src
                else:
                    data = np.asarray(g[UNCERTAINTY_VAR][t, r0:r1, c0:c1])
                dsts[ly.name].write(data.astype(ly.dtype, copy=False), 1, window=win)
    finally:
        for d in dsts.values():
            d.close()
    try:
        for ly in todo:
            out = folder / f"{ly.name}.tif"
            part = out.with_name(f".{out.name}.partial")
            rasterio.shutil.copy(
                tmp[ly.name], part, driver="COG", OVERVIEW_RESAMPLING=ly.resampling, **COG_OPTIONS
            )
            os.replace(part, out)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return {ly.name: ly for ly in todo}


def _asset(ly: Layer, res_m: float) -> dict:
    nan = isinstance(ly.nodata, float) and math.isnan(ly.nodata)
    band = raster_band(ly.dtype, None if nan else ly.nodata, res_m)
    if nan:
        band["nodata"] = "nan"  # the raster extension's spelling (JSON has no NaN)
    asset: dict = {
        "href": f"{ly.name}.tif",
        "type": COG_TYPE,
        "roles": ["data"] if ly.var == OPTICAL_VAR else ["metadata", "quality"],
        "raster:bands": [band],
    }
    if ly.var == OPTICAL_VAR:
        common = S2_BANDS.get(ly.name, (None, None, None))[0]
        asset["title"] = f"surface reflectance {ly.name}"
        asset["eo:bands"] = [{"name": ly.name, **({"common_name": common} if common else {})}]
        band["unit"] = "1"
    elif ly.var == SOURCE_VAR:
        asset["title"] = "where each pixel comes from: " + ", ".join(
            f"{k} {v}" for k, v in SOURCE_MEANINGS.items()
        )
    else:
        asset["title"] = UNCERTAINTY_LONG_NAME
    return asset


def cog_item(store: Path, attrs: dict, t: int, grid: GridSpec, layers_: dict[str, Layer]) -> dict:
    """The STAC item of one exported time step (assets relative to the item's folder)."""
    from shapely.geometry import box, mapping

    footprint = box(*lonlat_bounds(grid))
    time_iso = attrs[TIMES_ATTR][t]
    iid = item_id(store, time_iso)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [EXT_PROJ, EXT_RASTER, EXT_EO],
        "id": iid,
        "collection": COLLECTION,
        "geometry": mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": {
            "datetime": time_iso,
            **projection(grid),
            # projection v1's field: stackstac 0.5 reads the CRS from it, not proj:code (from
            # raw JSON: pystac drops it on reading, and stackstac then needs ``epsg=``)
            "proj:epsg": grid.epsg,
            "gsd": grid.res_m,
            "sar2opt:time_index": int(t),
            "sar2opt:store": store.name,
        },
        "assets": {name: _asset(ly, grid.res_m) for name, ly in layers_.items()},
        "links": [
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "root", "href": "../collection.json", "type": "application/json"},
        ],
    }


def _collection(items: Sequence[dict], folders: Sequence[str]) -> dict:
    times = [it["properties"]["datetime"] for it in items]
    bboxes = np.array([it["bbox"] for it in items]) if items else np.zeros((1, 4))
    bbox = [*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": "sar2opt mosaics as Cloud-Optimized GeoTIFFs (one per band and layer)",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[min(times), max(times)]] if times else [[None, None]]},
        },
        "links": [{"rel": "root", "href": "collection.json", "type": "application/json"}]
        + [
            {"rel": "item", "href": f"{f}/{it['id']}.json", "type": "application/geo+json"}
            for f, it in zip(folders, items, strict=True)
        ],
    }


def export_store(store: Path, out: Path, times: Sequence[str] | None = None) -> list[Path]:
    """COGs and a STAC item per selected time step of one store, into ``out``; the items."""
    attrs = read_attrs(store)
    grid = GridSpec.from_dict(attrs[GRID_ATTR])
    block_px = int(attrs[BLOCK_PX_ATTR])
    todo = select_times(attrs[TIMES_ATTR], times)
    out.mkdir(parents=True, exist_ok=True)
    paths, items, folders = [], [], []
    for t in todo:
        iid = item_id(store, attrs[TIMES_ATTR][t])
        folder = out / iid
        folder.mkdir(exist_ok=True)
        lys = _write_time_step(store, t, grid, block_px, folder)
        item = cog_item(store, attrs, t, grid, lys)
        p = folder / f"{iid}.json"
        p.write_text(json.dumps(item, indent=1))
        paths.append(p)
        items.append(item)
        folders.append(iid)
    (out / "collection.json").write_text(json.dumps(_collection(items, folders), indent=1))
    return paths


def export_cogs(
    root: str | Path, out: str | Path, times: Sequence[str] | None = None
) -> list[Path]:
    """Export the finished mosaic at ``root`` (a store, or a folder of zone stores, each into
    ``out/<zone>``); the STAC items written. A missing or unfinished store, or a time the
    store lacks, is a ``Sar2OptError`` (one line, before anything is written)."""
    root, out = Path(root), Path(out)
    try:
        stores = zone_stores(root, migrate=False)
    except StoreMissingError:
        what = "is not finished" if partial_path(root).exists() else "holds no mosaic store"
        raise ExportError(
            f"{root} {what}: export reads a finished mosaic (jobs/infer_region.py --out)"
        ) from None
    for s in stores:  # every --time must exist in every store before the first COG
        select_times(read_attrs(s)[TIMES_ATTR], times)
    if len(stores) == 1:
        return export_store(stores[0], out, times)
    return [p for s in stores for p in export_store(s, out / s.name.split(".")[0], times)]
