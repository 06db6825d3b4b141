"""``sar2opt catalog ingest``: manifest checks, warping through each file's georeference onto
one grid, the no-georeference error, and the SSL4EO / BioMassters samples when present."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from sar2opt.aoi import grid_for_aoi, load_aoi
from sar2opt.catalog.ingest import ingest, parse_manifest, read_band
from sar2opt.catalog.sets import biomassters_manifest, biomassters_month
from sar2opt.cli import main
from sar2opt.errors import CatalogError
from tests.helpers.data import SHARED_DATA

SSL4EO = SHARED_DATA / "ssl4eo_sample"
BIOMASSTERS = SHARED_DATA / "biomassters_sample"
EPSG = 32633  # x 500000 is the zone's central meridian (15 E)
X0, Y0 = 500000.0, 5000000.0


def _tif(path: Path, arr: np.ndarray, crs: str | None = None, transform: Affine | None = None):
    """A tiny GeoTIFF, (band, y, x) or (y, x); no CRS/transform when they are None."""
    arr = arr if arr.ndim == 3 else arr[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"crs": crs, "transform": transform} if crs is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the no-georeference case
        with rasterio.open(
            path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
            count=arr.shape[0], dtype=arr.dtype, **kw,
        ) as dst:  # fmt: skip
            dst.write(arr)
    return path


def _manifest(tmp_path: Path, manifest: dict) -> Path:
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump(manifest))
    return p


def _read(href: str) -> tuple[np.ndarray, Affine, float | None]:
    with rasterio.open(href) as src:
        return src.read(1), src.transform, src.nodata


def _pattern(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (100 + 7 * yy + 3 * xx + (yy * xx) % 5).astype(np.float32)


def test_shifted_file_lands_on_the_right_target_pixels(tmp_path):
    """S1 on the lattice at (X0, Y0); S2 30 m east and 20 m south of it: the S2 value of
    source pixel (r, c) lands on target pixel (r + 2, c + 3) of the one grid, S1 on (r, c)."""
    src = tmp_path / "src"
    pat = _pattern(12, 16)
    tf_s1 = Affine(10, 0, X0, 0, -10, Y0)
    tf_s2 = Affine(10, 0, X0 + 30, 0, -10, Y0 - 20)
    _tif(src / "vv.tif", pat / 1000.0, f"EPSG:{EPSG}", tf_s1)
    _tif(src / "b02.tif", pat.astype(np.uint16), f"EPSG:{EPSG}", tf_s2)
    m = _manifest(tmp_path, {"files": [
        {"path": "vv.tif", "sensor": "s1", "band": "VV", "date": "2024-05-01", "units": "linear"},
        {"path": "b02.tif", "sensor": "s2", "band": "B2", "date": "2024-05-02", "units": "dn"},
    ]})  # fmt: skip
    items = ingest(src, m, tmp_path / "out")
    s1 = next(i for i in items if i["collection"] == "sentinel-1-rtc")
    s2 = next(i for i in items if i["collection"] == "sentinel-2-l2a")
    # one grid for both: the union, on the 10 m lattice
    assert s1["properties"]["proj:transform"] == s2["properties"]["proj:transform"]
    assert s1["properties"]["proj:epsg"] == EPSG
    assert s1["properties"]["proj:shape"] == [14, 19]
    vv, tf, _ = _read(s1["assets"]["vv"]["href"])
    b02, _, nodata = _read(s2["assets"]["B02"]["href"])
    assert (tf.c, tf.f) == (X0, Y0)
    np.testing.assert_allclose(vv[:12, :16], pat / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(b02[2:, 3:], pat.astype(np.uint16))
    # where the shifted file does not reach: no data, not zeros pretending to be data
    assert nodata == 0 and (b02[:2] == 0).all() and (b02[:, :3] == 0).all()
    assert np.isnan(vv[12:]).all() or (vv[12:] == -32768).all()
    assert s1["properties"]["sar2opt:time_of_day_known"] is False
    assert s2["properties"]["datetime"] == "2024-05-02T12:00:00Z"


def test_geographic_file_is_reprojected_to_the_utm_zone_of_its_centre(tmp_path):
    """An EPSG:4326 file near 15.0 E, 45.1 N lands in UTM 33N, on the lattice."""
    src = tmp_path / "src"
    d = 0.0001
    _tif(src / "vv.tif", np.full((20, 20), -10.0, np.float32), "EPSG:4326",
         Affine(d, 0, 15.0, 0, -d, 45.1))  # fmt: skip
    m = _manifest(tmp_path, {"res_m": 10, "files": [
        {"path": "vv.tif", "sensor": "s1", "band": "vv", "date": "2024-05-01", "units": "db"},
    ]})  # fmt: skip
    (item,) = ingest(src, m, tmp_path / "out")
    p = item["properties"]
    assert p["proj:epsg"] == 32633
    t = p["proj:transform"]
    assert t[0] == 10 and t[2] % 10 == 0 and t[5] % 10 == 0
    vv, _, _ = _read(item["assets"]["vv"]["href"])
    inside = vv[vv != -32768]
    # 20 x 20 pixels of 0.0001 deg (~7.9 m east x 11.1 m north) cover ~350 pixels of 10 m
    assert 300 < inside.size < 400
    np.testing.assert_allclose(inside, 0.1, rtol=1e-5)  # -10 dB -> 0.1 linear


def test_ungeoreferenced_file_needs_a_grid(tmp_path, capsys):
    src = tmp_path / "src"
    _tif(src / "chip_S1_00.tif", np.zeros((2, 8, 8), np.float32))
    rows = [{"path": "chip_S1_00.tif", "sensor": "s1", "band": "vv", "date": "2020-01-01",
             "units": "db"}]  # fmt: skip
    out = tmp_path / "out"
    rc = main(["catalog", "ingest", str(src), "--manifest", str(_manifest(tmp_path, {
        "files": rows})), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: chip_S1_00.tif has no georeference") and "grid:" in err[0]
    assert not out.exists()
    # with the grid, it lands where the grid says
    grid = {"epsg": 32635, "x_min": 500000, "y_max": 6900000, "res_m": 10}
    (item,) = ingest(src, _manifest(tmp_path, {"grid": grid, "files": rows}), out)
    assert item["properties"]["proj:epsg"] == 32635
    assert item["properties"]["proj:transform"][2:6:3] == [500000.0, 6900000.0]
    assert item["properties"]["proj:shape"] == [8, 8]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"path": "missing.tif"}, "(missing.tif): file not found"),
        ({"sensor": "landsat"}, "unknown sensor 'landsat'"),
        ({"band": "B99"}, "unknown S2 band 'B99'"),
        ({"units": None}, "set units to one of ['dn', 'reflectance']"),
        ({"date": "last tuesday"}, "is not ISO"),
    ],
)
def test_bad_manifest_is_one_error_line(tmp_path, capsys, change, message):
    src = tmp_path / "src"
    _tif(src / "b02.tif", np.ones((4, 4), np.uint16), f"EPSG:{EPSG}",
         Affine(10, 0, X0, 0, -10, Y0))  # fmt: skip
    row = {"path": "b02.tif", "sensor": "s2", "band": "B02", "date": "2024-05-01", "units": "dn"}
    row = {k: v for k, v in {**row, **change}.items() if v is not None}
    m = _manifest(tmp_path, {"files": [row]})
    out = tmp_path / "out"
    rc = main(["catalog", "ingest", str(src), "--manifest", str(m), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_manifest_without_files_and_band_twice(tmp_path):
    with pytest.raises(CatalogError, match="'files' must be a non-empty list"):
        parse_manifest({"files": []}, tmp_path)
    src = tmp_path / "src"
    tf = Affine(10, 0, X0, 0, -10, Y0)
    _tif(src / "a.tif", np.ones((4, 4), np.float32), f"EPSG:{EPSG}", tf)
    row = {"path": "a.tif", "sensor": "s1", "band": "vv", "date": "2024-05-01", "units": "db"}
    with pytest.raises(CatalogError, match="band vv .* is given twice"):
        ingest(src, _manifest(tmp_path, {"files": [row, row]}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_clp_sets_cloud_cover_and_is_kept_as_an_asset(tmp_path):
    src = tmp_path / "src"
    arr = np.ones((2, 10, 10), np.uint16) * 500
    arr[1] = 10
    arr[1, :4] = 80  # CLP: 40 % of the pixels at 80 %
    arr[1, 4] = 50  # 10 % at exactly 50 %: not cloud, by the cube's rule (clean.clp_cloud)
    _tif(src / "s2.tif", arr, f"EPSG:{EPSG}", Affine(10, 0, X0, 0, -10, Y0))
    m = _manifest(tmp_path, {"files": [
        {"path": "s2.tif", "sensor": "s2", "band": "B02", "date": "2024-05-01", "units": "dn"},
        {"path": "s2.tif", "sensor": "s2", "band": "CLP", "date": "2024-05-01", "band_index": 2},
    ]})  # fmt: skip
    (item,) = ingest(src, m, tmp_path / "out")
    assert item["properties"]["eo:cloud_cover"] == pytest.approx(40.0)
    assert item["assets"]["CLP"]["roles"] == ["cloud"]
    clp, _, nodata = _read(item["assets"]["CLP"]["href"])
    assert nodata == 255 and clp.dtype == np.uint8 and (clp[:4] == 80).all()


def test_dem_becomes_a_cop_dem_item_in_metres(tmp_path):
    src = tmp_path / "src"
    _tif(src / "dem.tif", np.arange(16, dtype=np.float32).reshape(4, 4) + 100, f"EPSG:{EPSG}",
         Affine(10, 0, X0, 0, -10, Y0))  # fmt: skip
    m = _manifest(tmp_path, {"files": [{"path": "dem.tif", "sensor": "dem", "band": "dem"}]})
    (item,) = ingest(src, m, tmp_path / "out")
    assert item["collection"] == "cop-dem-glo-30"
    dem, _, nodata = _read(item["assets"]["data"]["href"])
    assert nodata == -32767 and dem[0, 0] == 100 and dem[3, 3] == 115


def test_biomassters_months_start_in_september():
    assert biomassters_month(0) == (2019, 9)
    assert biomassters_month(3) == (2019, 12)
    assert biomassters_month(4) == (2020, 1)
    assert biomassters_month(11) == (2020, 8)


# ---------------------------------------------------------------- the real samples


def _items(out: Path) -> list[dict]:
    return json.loads((out / "items.json").read_text())["features"]


@pytest.fixture(scope="module")
def ssl4eo(tmp_path_factory):
    if not SSL4EO.is_dir():
        pytest.skip(f"no SSL4EO sample at {SSL4EO}")
    out = tmp_path_factory.mktemp("ssl4eo")
    assert main(["catalog", "ssl4eo", str(SSL4EO), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def biomassters(tmp_path_factory):
    if not BIOMASSTERS.is_dir():
        pytest.skip(f"no BioMassters sample at {BIOMASSTERS}")
    out = tmp_path_factory.mktemp("bms")
    assert main(["catalog", "biomassters", str(BIOMASSTERS), "--out", str(out)]) == 0
    return out


def test_ssl4eo_sample(ssl4eo):
    items = _items(ssl4eo)
    s1 = [i for i in items if i["collection"] == "sentinel-1-rtc"]
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    assert [i["properties"]["datetime"] for i in s1] == [
        "2020-06-07T01:08:00Z", "2020-09-03T13:12:12Z",
    ]  # fmt: skip
    assert [i["properties"]["sat:orbit_state"] for i in s1] == ["descending", "ascending"]
    assert [i["properties"]["datetime"][:10] for i in s2] == ["2020-06-04", "2020-08-13"]
    assert all(sorted(i["assets"]) == ["vh", "vv"] for i in s1)
    want = {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"}
    assert all(set(i["assets"]) == want for i in s2)
    # one UTM 43N grid for S1 and S2 (their source grids differ), 10 m on the lattice
    keys = ("proj:epsg", "proj:transform")
    grids = {json.dumps([i["properties"][k] for k in keys]) for i in items}
    assert len(grids) == 1
    p = items[0]["properties"]
    assert p["proj:epsg"] == 32643 and p["proj:transform"][0] == 10.0
    assert 264 <= p["proj:shape"][0] <= 268 and 264 <= p["proj:shape"][1] <= 268
    # real values survived: dB -> linear, DN kept, 20 m band resampled onto 10 m pixels
    vv, _, _ = _read(s1[0]["assets"]["vv"]["href"])
    valid = vv[vv != -32768]
    assert valid.size > 0.9 * vv.size and 0.003 < np.median(valid) < 0.3
    b11, _, _ = _read(s2[0]["assets"]["B11"]["href"])
    assert b11.shape == vv.shape and 1000 < np.median(b11[b11 > 0]) < 6000
    # the AOI written beside the catalog gives a cube grid where S1 and S2 both have data
    cube_grid = grid_for_aoi(load_aoi(ssl4eo / "aoi.geojson"), 10.0)
    assert cube_grid.epsg == 32643 and 240 <= cube_grid.height <= 264
    for it, band in ((s1[0], "vv"), (s1[1], "vh"), (s2[0], "B02"), (s2[1], "B8A")):
        with rasterio.open(it["assets"][band]["href"]) as src:
            win = src.window(*cube_grid.bounds)
            assert abs(win.col_off - round(win.col_off)) < 1e-6 and win.col_off >= 0
            arr = src.read(1, window=win)
        assert arr.shape == cube_grid.shape and (arr != src.nodata).all(), band


def test_biomassters_sample(biomassters):
    items = _items(biomassters)
    s1 = [i for i in items if i["collection"] == "sentinel-1-rtc"]
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    assert len(s1) == 24 and len(s2) == 12
    # both orbit directions, distinct acquisitions on the same day
    asc = [i for i in s1 if i["properties"]["sat:orbit_state"] == "ascending"]
    desc = [i for i in s1 if i["properties"]["sat:orbit_state"] == "descending"]
    assert len(asc) == len(desc) == 12
    assert len({i["properties"]["datetime"] for i in s1}) == 24
    assert [i["properties"]["datetime"][:7] for i in s2] == [
        "2019-09", "2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04",
        "2020-05", "2020-06", "2020-07", "2020-08",
    ]  # fmt: skip
    assert all(set(i["assets"]) >= {"B02", "B03", "B04", "B08", "CLP"} for i in s2)
    # the stated made-up grid, 256 x 256 at 10 m in UTM 35N
    p = items[0]["properties"]
    assert p["proj:epsg"] == 32635 and p["proj:shape"] == [256, 256]
    assert p["proj:transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 6900000.0]
    # CLP drives eo:cloud_cover: December (month 03) about half cloudy, August ~40 %
    cover = {i["properties"]["datetime"][:7]: i["properties"]["eo:cloud_cover"] for i in s2}
    assert 35 < cover["2019-12"] < 70 and 25 < cover["2020-08"] < 60 and cover["2020-05"] < 5
    # band order: ascending VV is band 1, descending VH is band 4 of the source
    vh_desc_db = read_band(BIOMASSTERS / "train" / "0060c0a5_S1_00.tif", 4)
    vh = _read(next(i for i in desc if i["id"].startswith("S1_BIOMASSTERS_201909"))["assets"]
               ["vh"]["href"])[0]  # fmt: skip
    np.testing.assert_allclose(vh, 10 ** (vh_desc_db / 10), rtol=1e-5)
    assert biomassters_manifest(BIOMASSTERS)["grid"]["epsg"] == 32635
    # a cube on the written AOI is exactly the chip's grid
    grid = grid_for_aoi(load_aoi(biomassters / "aoi.geojson"), 10.0)
    assert grid.epsg == 32635 and grid.bounds == (500000.0, 6897440.0, 502560.0, 6900000.0)
