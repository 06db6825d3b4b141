"""Ingest of the real MultiEarth sample: grouping, grid from the file name, dB -> linear."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning

from sar2opt.catalog.multiearth import ingest_multiearth, patch_grid
from sar2opt.errors import CatalogError

SAMPLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "multiearth_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"no MultiEarth sample at {SAMPLE}")


def _read(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    if not SAMPLE.is_dir():
        pytest.skip(f"no MultiEarth sample at {SAMPLE}")
    out = tmp_path_factory.mktemp("me")
    return out, ingest_multiearth(SAMPLE, out)


@needs_sample
def test_item_counts_and_assets(ingested):
    out, items = ingested
    s1 = [i for i in items if i["collection"] == "sentinel-1-rtc"]
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    assert len(s1) == 4 and len(s2) == 13
    assert all(set(i["assets"]) == {"vv", "vh"} for i in s1)
    assert all(set(i["assets"]) == {"B01", "B02", "B03", "B04", "QA60"} for i in s2)
    assert {i["properties"]["datetime"][:10] for i in s1} == {
        "2019-05-27",
        "2019-06-08",
        "2019-06-20",
        "2019-07-02",
    }
    assert all(i["properties"]["datetime"].endswith("T12:00:00Z") for i in items)
    assert (out / "items.parquet").is_file()


@needs_sample
def test_db_to_linear_roundtrip(ingested):
    _, items = ingested
    it = next(i for i in items if i["id"].endswith("20190608") and i["id"].startswith("S1"))
    for pol in ("VV", "VH"):
        orig = _read(SAMPLE / "sent1" / f"Sentinel1_{pol}_-55.20_-4.39_2019_06_08.tiff")
        with rasterio.open(it["assets"][pol.lower()]["href"]) as src:
            lin = src.read(1)
            assert src.dtypes[0] == "float32" and src.nodata == -32768.0
        np.testing.assert_allclose(10 * np.log10(lin.astype(np.float64)), orig, atol=1e-4)


@needs_sample
def test_s2_values_unchanged_and_georeferenced(ingested):
    _, items = ingested
    it = next(i for i in items if i["id"] == "S2_MULTIEARTH_-55.20_-4.39_20190606")
    orig = _read(SAMPLE / "sent2" / "Sentinel2_B2_-55.20_-4.39_2019_06_06.tiff")
    with rasterio.open(it["assets"]["B02"]["href"]) as src:
        np.testing.assert_array_equal(src.read(1), orig)
        assert src.crs.to_epsg() == 32721
        assert list(src.transform)[:6] == it["properties"]["proj:transform"]
    assert it["properties"]["proj:epsg"] == 32721


def test_patch_grid_contains_centre():
    lon, lat = -55.20, -4.39
    g = patch_grid(lon, lat)
    assert g.epsg == 32721 and g.shape == (256, 256) and g.res_m == 10.0
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32721", always_xy=True).transform(lon, lat)
    xmin, ymin, xmax, ymax = g.bounds
    assert xmin < x < xmax and ymin < y < ymax
    # The centre is within one pixel of the middle of the patch.
    assert abs((xmin + xmax) / 2 - x) <= 10 and abs((ymin + ymax) / 2 - y) <= 10


def test_empty_or_missing_folder_raises(tmp_path):
    with pytest.raises(CatalogError, match="no Sentinel"):
        ingest_multiearth(tmp_path, tmp_path / "out")
    with pytest.raises(CatalogError, match="not found"):
        ingest_multiearth(tmp_path / "nope", tmp_path / "out")


def test_unparseable_names_are_skipped_with_a_warning(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    profile = dict(driver="GTiff", width=256, height=256, count=1, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name in ("Sentinel1_VV_-55.20_-4.39_2019_06_08.tiff", "Sentinel1_VV_garbage.tiff"):
            with rasterio.open(src / name, "w", **profile) as dst:
                dst.write(np.full((1, 256, 256), -10.0, np.float32))
    with pytest.warns(UserWarning, match="Sentinel1_VV_garbage"):
        items = ingest_multiearth(src, tmp_path / "out")
    assert [i["id"] for i in items] == ["S1_MULTIEARTH_-55.20_-4.39_20190608"]
    assert items[0]["properties"]["sar:polarizations"] == ["VV"]
    with rasterio.open(items[0]["assets"]["vv"]["href"]) as f:
        np.testing.assert_allclose(f.read(1), 0.1, rtol=1e-6)
