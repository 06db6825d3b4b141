"""Ingest the MultiEarth 2022 sample (real S1/S2 patches over Pará) into the local STAC catalog.

The GeoTIFFs carry no georeferencing, so each patch's grid is derived from its file name:
256 x 256 px at 10 m around the centre lon/lat, in the centre's UTM zone (EPSG:32721 here),
snapped to the 10 m lattice. S1 dB values become linear power (the ``sentinel-1-rtc`` convention);
S2 bands are renamed ``B1`` -> ``B01`` and keep their uint16 DN (reflectance x 1e4).
The data is read where it lies (``src_dir``) and only the converted COGs go under ``out_dir``.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from sar2opt.catalog.cog import write_cog
from sar2opt.catalog.items import S1_NODATA, S2_NODATA, s1_item, s2_item, write_catalog
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec, utm_epsg

log = logging.getLogger(__name__)

PATCH_PX = 256
RES_M = 10.0
_NAME = re.compile(
    r"^Sentinel(?P<sensor>[12])_(?P<band>[A-Za-z0-9]+)_(?P<lon>-?\d+(?:\.\d+)?)_"
    r"(?P<lat>-?\d+(?:\.\d+)?)_(?P<y>\d{4})_(?P<m>\d{2})_(?P<d>\d{2})\.tiff?$"
)
_S1_BANDS = {"VV": "vv", "VH": "vh"}
_S2_BANDS = {"B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "QA60": "QA60"}
# Crude pixel cloud test used only to fill eo:cloud_cover (QA60 is all zeros in this archive).
_CLOUD_BRIGHTNESS = 0.18
_CLOUD_WHITENESS = 0.7


def patch_grid(lon: float, lat: float, px: int = PATCH_PX, res_m: float = RES_M) -> GridSpec:
    """The ``px`` x ``px`` grid at ``res_m`` around (lon, lat) in its UTM zone, on the lattice.

    ``GridSpec.covering`` of centre +/- half a patch snaps outwards (px + 1 pixels when the centre
    is off-lattice); the grid keeps exactly ``px`` pixels from its north-west corner.
    """
    from pyproj import Transformer

    epsg = utm_epsg(lon, lat)
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    half = px * res_m / 2.0
    cov = GridSpec.covering(epsg, res_m, (x - half, y - half, x + half, y + half))
    xmin, ymax = cov.bounds[0], cov.bounds[3]
    return GridSpec(epsg, res_m, (xmin, ymax - px * res_m, xmin + px * res_m, ymax))


def _read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


def _estimate_cloud_cover(bands: dict[str, np.ndarray]) -> float | None:
    """Percent of bright, white pixels in B02-B04: an estimate, since QA60 cannot be trusted."""
    if not all(b in bands for b in ("B02", "B03", "B04")):
        return None
    rgb = np.stack([bands[b].astype(np.float32) / 10000.0 for b in ("B02", "B03", "B04")])
    valid = np.all(rgb > 0, axis=0)
    if not valid.any():
        return None
    bright = rgb.mean(axis=0)
    white = rgb.min(axis=0) / np.maximum(rgb.max(axis=0), 1e-6)
    cloud = (bright > _CLOUD_BRIGHTNESS) & (white > _CLOUD_WHITENESS) & valid
    return 100.0 * float(cloud.sum()) / float(valid.sum())


def ingest_multiearth(src_dir: str | Path, out_dir: str | Path) -> list[dict]:
    """Convert the MultiEarth sample under ``src_dir`` into COGs + a catalog under ``out_dir``.

    One item per (sensor, location, date). Returns the items (also written by ``write_catalog``).
    Raises ``CatalogError`` when ``src_dir`` is missing or holds no Sentinel-1/2 GeoTIFFs.
    """
    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    if not src_dir.is_dir():
        raise CatalogError(f"MultiEarth folder not found: {src_dir}")
    groups: dict[tuple[str, str, str, str], dict[str, Path]] = defaultdict(dict)
    for path in sorted(src_dir.rglob("Sentinel*")):
        if not path.is_file() or path.suffix.lower() not in (".tif", ".tiff"):
            continue
        m = _NAME.match(path.name)
        table = (_S1_BANDS if m.group("sensor") == "1" else _S2_BANDS) if m else {}
        band = m.group("band").upper() if m else ""
        if not m or band not in table:
            warnings.warn(f"skipping {path.name}: not a Sentinel-1/2 MultiEarth name", stacklevel=2)
            continue
        key = (
            m.group("sensor"),
            m.group("lon"),
            m.group("lat"),
            m.group("y") + m.group("m") + m.group("d"),
        )
        groups[key][table[band]] = path
    if not groups:
        raise CatalogError(
            f"no Sentinel-1/2 GeoTIFFs named like Sentinel1_VV_-55.20_-4.39_2019_06_08.tiff "
            f"under {src_dir}"
        )

    cogs = out_dir / "cogs"
    items: list[dict] = []
    for (sensor, lon_s, lat_s, ymd), files in sorted(groups.items()):
        lon, lat = float(lon_s), float(lat_s)
        grid = patch_grid(lon, lat)
        dt = datetime.strptime(ymd, "%Y%m%d").replace(hour=12, tzinfo=timezone.utc)
        props = {
            "sar2opt:source": "multiearth-2022-sample",
            "sar2opt:time_of_day_known": False,
            "sar2opt:patch_centre": [lon, lat],
        }
        hrefs: dict[str, Path] = {}
        if sensor == "1":
            item_id = f"S1_MULTIEARTH_{lon_s}_{lat_s}_{ymd}"
            for pol, path in sorted(files.items()):
                db = _read(path).astype(np.float32)
                if db.shape != grid.shape:
                    raise CatalogError(f"{path.name}: expected {grid.shape} pixels, got {db.shape}")
                lin = np.where(np.isfinite(db), 10.0 ** (db / 10.0), S1_NODATA).astype(np.float32)
                hrefs[pol] = write_cog(
                    cogs / f"{item_id}_{pol}.tif", lin, grid, S1_NODATA, "float32"
                )
            items.append(
                s1_item(
                    item_id,
                    dt,
                    grid,
                    hrefs,
                    platform="SENTINEL-1",  # A or B: not recorded in the sample
                    orbit_state=None,  # not recorded in the sample
                    extra_properties={
                        **props,
                        "sar2opt:backscatter": "sigma0 (GEE S1_GRD), dB->linear",
                    },
                )
            )
        else:
            item_id = f"S2_MULTIEARTH_{lon_s}_{lat_s}_{ymd}"
            arrays: dict[str, np.ndarray] = {}
            for name, path in sorted(files.items()):
                arr = _read(path)
                if arr.shape != grid.shape:
                    raise CatalogError(
                        f"{path.name}: expected {grid.shape} pixels, got {arr.shape}"
                    )
                arrays[name] = arr
                nodata = None if name == "QA60" else S2_NODATA
                hrefs[name] = write_cog(cogs / f"{item_id}_{name}.tif", arr, grid, nodata, "uint16")
            items.append(
                s2_item(
                    item_id,
                    dt,
                    grid,
                    hrefs,
                    cloud_cover=_estimate_cloud_cover(arrays),
                    platform="Sentinel-2",  # A or B: not recorded in the sample
                    # Pre-04.00 baseline: DN = reflectance x 1e4 with no +1000 offset.
                    processing_baseline="03.00",
                    extra_properties={**props, "sar2opt:cloud_cover_method": "brightness estimate"},
                )
            )
    write_catalog(items, out_dir)
    log.info("ingested %d MultiEarth items into %s", len(items), out_dir)
    return items
