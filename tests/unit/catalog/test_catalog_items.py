"""STAC item fields match Planetary Computer's shape and the GridSpec they came from."""

from __future__ import annotations

import json

import pytest
import rustac
from shapely.geometry import box, shape

from sar2opt.catalog.items import S1_COLLECTION, S2_COLLECTION, s1_item, s2_item, write_catalog
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec, lonlat_bounds

GRID = GridSpec(32721, 10.0, (716630.0, 9441880.0, 719190.0, 9444440.0))  # 256 x 256


def _s1(item_id="S1A_IW_TEST_20230701T091500"):
    from datetime import datetime

    return s1_item(
        item_id, datetime(2023, 7, 1, 9, 15), GRID, {"vv": "/x/vv.tif", "vh": "/x/vh.tif"}
    )


def _s2(item_id="S2B_MSIL2A_TEST_20230703T140000"):
    from datetime import datetime, timezone

    hrefs = {b: f"/x/{b}.tif" for b in ("B02", "B03", "B04", "B08", "QA60", "SCL")}
    dt = datetime(2023, 7, 3, 14, 0, tzinfo=timezone.utc)
    return s2_item(item_id, dt, GRID, hrefs, cloud_cover=12.5)


def test_projection_fields_match_grid():
    for it in (_s1(), _s2()):
        p = it["properties"]
        assert p["proj:epsg"] == 32721 and isinstance(p["proj:epsg"], int)
        assert p["proj:code"] == "EPSG:32721"
        assert p["proj:shape"] == [256, 256]
        assert p["proj:transform"] == list(GRID.transform)[:6]
        assert p["proj:bbox"] == list(GRID.bounds)
        assert it["bbox"] == pytest.approx(list(lonlat_bounds(GRID)), abs=1e-6)
        geom = shape(it["geometry"])
        assert geom.is_valid and box(*it["bbox"]).buffer(1e-9).contains(geom)
        assert any("projection" in e for e in it["stac_extensions"])
        assert any("raster" in e for e in it["stac_extensions"])


def test_s1_item_looks_like_pc():
    it = _s1()
    assert it["collection"] == S1_COLLECTION
    assert it["properties"]["datetime"] == "2023-07-01T09:15:00Z"
    assert it["properties"]["sar:polarizations"] == ["VV", "VH"]
    assert it["properties"]["sar:instrument_mode"] == "IW"
    assert it["properties"]["sat:orbit_state"] == "descending"
    band = it["assets"]["vv"]["raster:bands"][0]
    assert band["nodata"] == -32768 and band["data_type"] == "float32"
    assert it["assets"]["vv"]["href"] == "/x/vv.tif"
    assert any("/sar/" in e for e in it["stac_extensions"])


def test_s2_item_looks_like_pc():
    it = _s2()
    p = it["properties"]
    assert it["collection"] == S2_COLLECTION
    assert p["eo:cloud_cover"] == 12.5 and p["s2:processing_baseline"] == "03.00"
    assert p["platform"] == "Sentinel-2B"
    assert set(it["assets"]) == {"B02", "B03", "B04", "B08", "QA60", "SCL"}
    b02 = it["assets"]["B02"]["raster:bands"][0]
    assert b02["nodata"] == 0 and b02["data_type"] == "uint16"
    assert it["assets"]["B08"]["eo:bands"][0]["common_name"] == "nir"
    assert "nodata" not in it["assets"]["QA60"]["raster:bands"][0]  # 0 means clear, not missing


def test_write_catalog_parquet_and_json(tmp_path):
    items = [_s1(), _s2()]
    parquet = write_catalog(items, tmp_path)
    assert parquet == tmp_path / "items.parquet"
    back = rustac.read_sync(str(parquet))["features"]
    assert sorted(i["id"] for i in back) == sorted(i["id"] for i in items)
    s1 = next(i for i in back if i["collection"] == S1_COLLECTION)
    assert s1["properties"]["proj:epsg"] == 32721
    assert s1["assets"]["vv"]["raster:bands"][0]["nodata"] == -32768
    text = (tmp_path / "items.json").read_text()
    assert "NaN" not in text
    assert len(json.loads(text)["features"]) == 2


def test_write_catalog_refuses_duplicates_and_empty(tmp_path):
    with pytest.raises(CatalogError, match="duplicate"):
        write_catalog([_s1(), _s1()], tmp_path)
    with pytest.raises(CatalogError, match="no items"):
        write_catalog([], tmp_path)
