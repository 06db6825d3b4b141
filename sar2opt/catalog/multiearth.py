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

from sar2opt.catalog.ingest import (
    db_to_linear,
    estimate_cloud_cover,
    read_band,
    write_s1,
    write_s2,
)
from sar2opt.catalog.items import write_catalog
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
        if sensor == "1":
            item_id = f"S1_MULTIEARTH_{lon_s}_{lat_s}_{ymd}"
            linear = {}
            for pol, path in sorted(files.items()):
                db = read_band(path)
                if db.shape != grid.shape:
                    raise CatalogError(f"{path.name}: expected {grid.shape} pixels, got {db.shape}")
                linear[pol] = db_to_linear(db)
            items.append(
                write_s1(
                    out_dir / "cogs",
                    item_id,
                    dt,
                    grid,
                    linear,
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
            arrays = {}
            for name, path in sorted(files.items()):
                arr = read_band(path)
                if arr.shape != grid.shape:
                    raise CatalogError(
                        f"{path.name}: expected {grid.shape} pixels, got {arr.shape}"
                    )
                arrays[name] = arr
            items.append(
                write_s2(
                    out_dir / "cogs",
                    item_id,
                    dt,
                    grid,
                    arrays,
                    cloud_cover=estimate_cloud_cover(arrays),
                    platform="Sentinel-2",  # A or B: not recorded in the sample
                    # Pre-04.00 baseline: DN = reflectance x 1e4 with no +1000 offset.
                    processing_baseline="03.00",
                    extra_properties={**props, "sar2opt:cloud_cover_method": "brightness estimate"},
                )
            )
    write_catalog(items, out_dir)
    log.info("ingested %d MultiEarth items into %s", len(items), out_dir)
    return items
