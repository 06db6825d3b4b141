"""stackstac loading onto the GridSpec, on tiny generated GeoTIFFs (no server needed)."""

import numpy as np
import pytest

from sar2opt.cube.clean_s1 import db_to_linear, linear_to_db
from sar2opt.cube.load import group_acquisitions, load_optical, load_sar
from sar2opt.grid import GridSpec
from tests.helpers.rasters import make_item, write_tif

GRID = GridSpec(32721, 10.0, (700000, 9500000, 700640, 9500320))  # 32 x 64 px


@pytest.fixture
def s1_items(tmp_path):
    rng = np.random.default_rng(0)
    vv_db = rng.uniform(-20, -5, GRID.shape).astype("float32")
    vh_db = vv_db - 6
    lin_vv = db_to_linear(vv_db)
    lin_vv[0, 0] = -32768  # nodata
    # one acquisition split in two frames (west, east halves), a second acquisition 12 days later
    west, east = GRID.subgrid(0, 0, 32, 32), GRID.subgrid(0, 32, 32, 32)
    items = []
    for k, (sub, sl) in enumerate([(west, np.s_[:, :32]), (east, np.s_[:, 32:])]):
        a = {
            "vv": write_tif(tmp_path / f"vv{k}.tif", lin_vv[sl], sub, -32768, "float32"),
            "vh": write_tif(
                tmp_path / f"vh{k}.tif", db_to_linear(vh_db)[sl], sub, -32768, "float32"
            ),
        }
        items.append(make_item(f"f{k}", f"2023-07-01T09:15:{10 * k:02d}Z", a, sub))
    a = {
        "vv": write_tif(tmp_path / "vv2.tif", db_to_linear(vv_db + 1), GRID, -32768, "float32"),
        "vh": write_tif(tmp_path / "vh2.tif", db_to_linear(vh_db + 1), GRID, -32768, "float32"),
    }
    items.append(make_item("later", "2023-07-13T09:15:00Z", a, GRID))
    return items, vv_db, vh_db


def test_group_acquisitions_merges_frames(s1_items):
    items, *_ = s1_items
    groups = group_acquisitions(items[::-1])
    assert [g[0] for g in groups] == ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z"]
    assert [len(g[1]) for g in groups] == [2, 1]


def test_load_sar_puts_pixels_on_the_grid_in_db(s1_items):
    items, vv_db, vh_db = s1_items
    sar = load_sar(items, GRID, ("vv", "vh")).compute()
    assert sar.dims == ("time", "band", "y", "x") and sar.shape == (2, 2, 32, 64)
    assert list(sar.band.values) == ["vv", "vh"]
    np.testing.assert_allclose(sar.values[0, 0].ravel()[1:], vv_db.ravel()[1:], atol=1e-4)
    np.testing.assert_allclose(sar.values[1, 1], vh_db + 1, atol=1e-4)
    assert np.isnan(sar.values[0, 0, 0, 0])  # nodata -32768 -> NaN
    np.testing.assert_allclose(sar.x.values, GRID.xs())


def test_load_sar_on_a_tile_reads_the_same_pixels(s1_items):
    items, vv_db, _ = s1_items
    tile = GRID.subgrid(8, 24, 16, 32)  # straddles the two frames
    sar = load_sar(items, tile, ("vv",)).isel(time=0).values
    np.testing.assert_allclose(sar[0], vv_db[8:24, 24:56], atol=1e-4)


def test_load_optical_scales_and_applies_baseline_offset(tmp_path):
    dn = np.full(GRID.shape, 1500, "uint16")
    dn[0, :5] = 0  # nodata
    old = make_item(
        "old",
        "2023-07-03T14:00:00Z",
        {"B02": write_tif(tmp_path / "a.tif", dn, GRID, 0, "uint16")},
        GRID,
        {"s2:processing_baseline": "03.01"},
    )
    new = make_item(
        "new",
        "2023-07-08T14:00:00Z",
        {"B02": write_tif(tmp_path / "b.tif", dn, GRID, 0, "uint16")},
        GRID,
        {"s2:processing_baseline": "05.10"},
    )
    opt = load_optical([old, new], GRID, ("B02",)).compute()
    assert opt.shape == (2, 1, 32, 64)
    assert opt.values[0, 0, 5, 5] == pytest.approx(0.15, abs=1e-6)
    assert opt.values[1, 0, 5, 5] == pytest.approx(0.05, abs=1e-6)  # (1500 - 1000) * 1e-4
    assert np.isnan(opt.values[:, 0, 0, :5]).all()


def test_db_linear_round_trip_and_invalid():
    db = np.array([-30.0, -10.0, 0.0, 5.0], "float32")
    np.testing.assert_allclose(linear_to_db(db_to_linear(db)), db, atol=1e-4)
    out = linear_to_db(np.array([0.0, -32768.0, 0.1], "float32"))
    assert np.isnan(out[:2]).all() and out[2] == pytest.approx(-10.0)
