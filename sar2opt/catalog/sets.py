"""Manifests for the two real samples that are not named by their files: SSL4EO-S12 and
BioMassters. Each writer looks at the sample and returns a manifest for ``catalog.ingest``,
which does the warping; the traps of each set (their READMEs) are handled here, in words.

SSL4EO-S12 (one location in Punjab): every GeoTIFF is georeferenced in EPSG:4326 and S1 and
S2 lie on different grids (origins ~40 m apart), so ``ingest`` warps each file onto one
UTM 43N grid. Only the L2A folder (``s2a``) is ingested (``s2c`` is L1C, top of atmosphere, not
``sentinel-2-l2a``); its 10 m bands B02 B03 B04 B08 and its 20 m bands (B05 B06 B07 B8A B11
B12, bilinearly resampled to 10 m by the same warp); the 60 m bands are left out. Times come
from the product ids / ``metadata.json`` (S1 start time, S2 ``system:time_start``), the
orbit direction from ``orbitProperties_pass``.

BioMassters (chip 0060c0a5, Finland): no georeference at all. The chip is put on a made-up
grid in EPSG:32635 (UTM 35N) with its north-west corner at (500000, 6900000), about 62.2 N
27 E, 10 m pixels: positions are consistent, not true. Month index MM = 00 is September; the
year chosen is September 2019 -> August 2020 (the benchmark does not say which year a chip is
from). Each month becomes acquisitions on the 15th: the ascending S1 pass (bands 1-2, VV VH)
at 15:50 UTC and the descending pass (bands 3-4) at 04:40 UTC (the local overpass times of
Finland), each its own item with ``sat:orbit_state``; S2 at 09:50 UTC with its ten bands and
the CLP cloud probability as a ``CLP`` asset, which sets ``eo:cloud_cover`` (% of pixels with
CLP > 50, ``cube.clean.clp_cloud``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sar2opt.cube.clean import CLP_BAND
from sar2opt.errors import CatalogError

SSL4EO_S2_BANDS = {
    "B2": "B02", "B3": "B03", "B4": "B04", "B8": "B08",  # 10 m
    "B5": "B05", "B6": "B06", "B7": "B07", "B8A": "B8A", "B11": "B11", "B12": "B12",  # 20 m
}  # fmt: skip
_S1_ID = re.compile(r"^S1(?P<unit>[AB])_IW_GRDH_\w{4}_(?P<start>\d{8}T\d{6})_")

BIOMASSTERS_YEAR = 2019  # month 00 = September 2019, month 11 = August 2020
BIOMASSTERS_GRID = {"epsg": 32635, "x_min": 500000.0, "y_max": 6900000.0, "res_m": 10.0}
BIOMASSTERS_S2_BANDS = (
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", CLP_BAND,
)  # fmt: skip
BIOMASSTERS_S1 = {  # orbit state -> (UTC hour, minute), (band index of VV, of VH)
    "ascending": ((15, 50), (1, 2)),
    "descending": ((4, 40), (3, 4)),
}
BIOMASSTERS_S2_TIME = (9, 50)
_BMS_FILE = re.compile(r"^(?P<chip>[0-9a-f]+)_(?P<sensor>S[12])_(?P<mm>\d{2})\.tif$")


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _metadata(folder: Path) -> dict[str, Any]:
    p = folder / "metadata.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def ssl4eo_manifest(src: str | Path) -> dict[str, Any]:
    """The manifest of an SSL4EO-S12 sample folder (``s1/``, ``s2a/`` under it)."""
    src = Path(src)
    files: list[dict[str, Any]] = []
    for folder in sorted(src.glob("s1/*/*")):
        m = _S1_ID.match(folder.name)
        if not folder.is_dir() or not m:
            continue
        meta = _metadata(folder)
        start = datetime.strptime(m.group("start"), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        orbit = str(meta.get("orbitProperties_pass", "")).lower() or None
        for pol in ("VV", "VH"):
            if (folder / f"{pol}.tif").is_file():
                row = {
                    "path": str((folder / f"{pol}.tif").relative_to(src)),
                    "sensor": "s1", "band": pol.lower(), "date": _iso(start), "units": "db",
                    "platform": f"SENTINEL-1{m.group('unit')}",
                }  # fmt: skip
                if orbit in ("ascending", "descending"):
                    row["orbit_state"] = orbit
                files.append(row)
    for folder in sorted(src.glob("s2a/*/*")):
        if not folder.is_dir():
            continue
        meta = _metadata(folder)
        if "system:time_start" in meta:
            dt = datetime.fromtimestamp(meta["system:time_start"] / 1000.0, tz=timezone.utc)
        else:
            dt = datetime.strptime(folder.name[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        dt = dt.replace(microsecond=0)
        for name, band in SSL4EO_S2_BANDS.items():
            if (folder / f"{name}.tif").is_file():
                row = {
                    "path": str((folder / f"{name}.tif").relative_to(src)),
                    "sensor": "s2", "band": band, "date": _iso(dt), "units": "dn",
                    "scale": 10000,
                }  # fmt: skip
                if meta.get("SPACECRAFT_NAME"):
                    row["platform"] = str(meta["SPACECRAFT_NAME"])
                files.append(row)
    if not files:
        raise CatalogError(f"no SSL4EO-S12 s1/*/*/VV.tif or s2a/*/*/B2.tif under {src}")
    return {
        "name": "SSL4EO",
        "res_m": 10,
        "properties": {"sar2opt:dataset": "ssl4eo-s12-sample"},
        "files": files,
    }


def biomassters_month(mm: int) -> tuple[int, int]:
    """(year, month) of BioMassters month index ``mm`` (00 = September of BIOMASSTERS_YEAR)."""
    month0 = 8 + mm  # 0-based calendar month: 8 = September
    return BIOMASSTERS_YEAR + month0 // 12, month0 % 12 + 1


def biomassters_manifest(src: str | Path) -> dict[str, Any]:
    """The manifest of a BioMassters sample folder (``train/<chip>_S1_MM.tif``, ``_S2_MM.tif``)."""
    src = Path(src)
    files: list[dict[str, Any]] = []
    for path in sorted((src / "train").glob("*.tif")):
        m = _BMS_FILE.match(path.name)
        if not m:
            continue
        year, month = biomassters_month(int(m.group("mm")))
        rel = str(path.relative_to(src))
        if m.group("sensor") == "S1":
            for orbit, ((hh, mi), idx) in BIOMASSTERS_S1.items():
                dt = datetime(year, month, 15, hh, mi, tzinfo=timezone.utc)
                for pol, i in zip(("vv", "vh"), idx, strict=True):
                    files.append(
                        {"path": rel, "sensor": "s1", "band": pol, "band_index": i,
                         "date": _iso(dt), "units": "db", "orbit_state": orbit}
                    )  # fmt: skip
        else:
            hh, mi = BIOMASSTERS_S2_TIME
            dt = datetime(year, month, 15, hh, mi, tzinfo=timezone.utc)
            for i, band in enumerate(BIOMASSTERS_S2_BANDS, start=1):
                row = {"path": rel, "sensor": "s2", "band": band, "band_index": i, "date": _iso(dt)}
                if band != CLP_BAND:
                    row.update(units="dn", scale=10000)
                files.append(row)
    if not files:
        raise CatalogError(f"no BioMassters train/<chip>_S1_MM.tif / _S2_MM.tif under {src}")
    return {
        "name": "BIOMASSTERS",
        "res_m": 10,
        "grid": dict(BIOMASSTERS_GRID),
        "properties": {
            "sar2opt:dataset": "biomassters-sample",
            "sar2opt:grid_made_up": True,  # no georeference in the source: positions invented
        },
        "files": files,
    }


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write ``manifest`` as YAML (what a user would edit) and return its path."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    return path
