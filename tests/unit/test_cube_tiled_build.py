"""Tiled builds on tiny GeoTIFFs: same pixels as build_cube, resume after a failure, refusals."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from shapely.geometry import box

from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube import build, tiled_build
from sar2opt.grid import GridSpec, lonlat_bounds
from tests.helpers.rasters import make_item, write_s1_assets, write_tif

GRID = GridSpec(32721, 10.0, (700000, 9500000, 700320, 9500160))  # 16 x 32 px
CAT = CatalogSpec(opt_bands=("B02", "B03", "B04"))
# 8 px tiles (2 x 4 of them); clouds dilated by 2 px, across tile borders
SPEC = CubeSpec(epsg=32721, max_dt_days=6, cloud_dilate_px=2, chunk_px=8, tile_px=8)
DATES = ("2023-07-01", "2023-07-31")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tiles")
    rng = np.random.default_rng(1)
    west, east = GRID.subgrid(0, 0, 16, 16), GRID.subgrid(0, 16, 16, 16)
    s1 = []
    # pass 1: two frames (west, east); pass 2: the west frame only -> east tiles NaN then
    for k, (day, frames) in enumerate(
        (("2023-07-10", ((west, "w"), (east, "e"))), ("2023-07-22", ((west, "w"),)))
    ):
        for sub, tag in frames:
            a = write_s1_assets(tmp_path, f"{k}{tag}", sub, rng)
            sec = 0 if tag == "w" else 20
            s1.append(make_item(f"s1_{k}{tag}", f"{day}T09:15:{sec:02d}Z", a, sub))
    s2 = []
    for k, day in enumerate(("2023-07-08", "2023-07-12", "2023-07-21")):
        dn = rng.integers(300, 900, (3, *GRID.shape)).astype("uint16")
        # white clouds on each side of the tile border at col 8 (rows 6-8 cross the one at
        # row 8): dilated by 2 px, each reaches into the neighbouring tile
        if k == 0:
            dn[:, 6:9, 8:11] = 4000
        if k == 1:
            dn[:, 6:9, 5:8] = 4000
        hrefs = {
            b: write_tif(tmp_path / f"{b}_{k}.tif", dn[i], GRID, 0, "uint16")
            for i, b in enumerate(("B02", "B03", "B04"))
        }
        s2.append(
            make_item(
                f"s2_{k}", f"{day}T14:00:00Z", hrefs, GRID, {"s2:processing_baseline": "03.00"}
            )
        )
    return s1, s2


def _patch(mp, items):
    s1, s2 = items
    mp.setattr(build, "search_s1", lambda *a, **k: s1)
    mp.setattr(build, "search_aoi", lambda *a, **k: s2)
    return box(*lonlat_bounds(GRID)).buffer(-1e-5)


@pytest.fixture
def scene(items, monkeypatch):
    return _patch(monkeypatch, items)


@pytest.fixture(scope="module")
def reference(items, tmp_path_factory):
    """build_cube in memory and an uninterrupted tiled build, made once for the module."""
    out = tmp_path_factory.mktemp("ref") / "full.zarr"
    with pytest.MonkeyPatch.context() as mp:
        aoi = _patch(mp, items)
        ref = build.build_cube(aoi, *DATES, catalog=CAT, spec=SPEC, log=lambda *_: None)
        res = _tiled(aoi, out)
    return ref, out, res


def _tiled(aoi, out, spec=SPEC, **kw):
    return tiled_build.build_tiled(
        aoi, *DATES, catalog=CAT, spec=spec, out=out, log=lambda *_: None, **kw
    )


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a.cube.values, b.cube.values)
    for c in ("time", "band", "y", "x"):
        np.testing.assert_array_equal(a[c].values, b[c].values)
    skip = {"created_utc", "build", "cube_spec"}
    assert {k: v for k, v in a.attrs.items() if k not in skip} == {
        k: v for k, v in b.attrs.items() if k not in skip
    }


def test_tiled_build_has_the_pixels_of_build_cube(reference):
    ref, out, res = reference
    assert (res.tiles_total, res.tiles_run, res.multi_zone) == (8, 8, False)
    ds = xr.open_zarr(out)
    _same(ref, ds)
    assert ds.attrs["build"]["status"] == "complete"
    assert not (out / tiled_build.TILE_DIR).exists()
    assert ds.cube.encoding["chunks"] == (1, 6, 8, 8)
    # the second pass saw only the west frame: the east half is NaN there, not zero
    vv = ds.cube.sel(band="vv").values
    assert np.isnan(vv[1, :, 16:]).all() and not np.isnan(vv[1, :, :16]).any()
    assert not np.isnan(vv[0]).any()
    # the dilated cloud crossed a tile border: the halo makes the borders agree
    # 07-10 pairs 07-08 then 07-12: cloudy in both where the dilated clouds overlap, which
    # spans the tile corner at (8, 8)
    expected = np.ones(GRID.shape, "float32")
    expected[4:11, 6:10] = 0
    np.testing.assert_array_equal(ds.cube.sel(band="clear").values[0], expected)


def test_without_halo_the_tile_borders_would_differ(scene, reference, tmp_path, monkeypatch):
    """Guards the halo test above: it can fail."""
    ref = reference[0]
    original = tiled_build.tile_tasks
    monkeypatch.setattr(tiled_build, "tile_tasks", lambda b, halo_px: original(b, 0))
    _tiled(scene, tmp_path / "cube.zarr")
    ds = xr.open_zarr(tmp_path / "cube.zarr")
    assert not np.array_equal(ds.cube.values, ref.cube.values, equal_nan=True)


def test_interrupted_build_resumes_to_the_same_cube(scene, reference, tmp_path, monkeypatch):
    calls = []
    real = tiled_build.run_tile

    def failing(task, *a):
        if len(calls) == 3:
            raise RuntimeError("worker lost")
        calls.append(task.key)
        return real(task, *a)

    monkeypatch.setattr(tiled_build, "run_tile", failing)
    # in this process: on Ray (up when an earlier test started it) the patched function runs
    # in workers, on a pickled copy of ``calls``
    monkeypatch.setattr(tiled_build, "ray_is_initialized", lambda: False)
    out = tmp_path / "cube.zarr"
    with pytest.raises(RuntimeError, match="worker lost"):
        _tiled(scene, out)
    assert tiled_build.output_status(out) == "incomplete"
    assert tiled_build.done_tiles(out) == set(calls) and len(calls) == 3
    monkeypatch.setattr(tiled_build, "run_tile", real)
    res = _tiled(scene, out)
    assert (res.tiles_total, res.tiles_run) == (8, 5)
    _same(xr.open_zarr(reference[1]), xr.open_zarr(out))
    assert tiled_build.output_status(out) == "complete"


def test_complete_is_refused_other_request_is_refused_overwrite_replaces(
    scene, reference, tmp_path
):
    out = tmp_path / "cube.zarr"
    shutil.copytree(reference[1], out)
    with pytest.raises(tiled_build.OutputExistsError, match="--overwrite"):
        _tiled(scene, out)
    # an incomplete store of another request (other settings) is not resumed
    group = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    group.attrs["build"] = dict(group.attrs["build"]) | {"status": "incomplete"}
    other = replace(SPEC, max_dt_days=3)
    with pytest.raises(tiled_build.OutputExistsError, match="another request"):
        _tiled(scene, out, spec=other)
    res = _tiled(scene, out, spec=other, overwrite=True)
    assert res.tiles_run == 8
    assert xr.open_zarr(out).attrs["cube_spec"]["max_dt_days"] == 3


def test_sharded_store_has_one_shard_per_tile(scene, reference, tmp_path):
    spec = replace(SPEC, chunk_px=4, shard_tiles=True)
    _tiled(scene, tmp_path / "s.zarr", spec=spec)
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "cube"), mode="r")
    assert arr.shards == (1, 6, 8, 8) and arr.chunks == (1, 6, 4, 4)
    np.testing.assert_array_equal(
        xr.open_zarr(tmp_path / "s.zarr").cube.values, xr.open_zarr(reference[1]).cube.values
    )


def test_tile_tasks_carry_only_the_items_meeting_them(scene):
    plan = tiled_build.plan_zones(scene, SPEC)[0]
    inputs = build.search_inputs(scene, *DATES, catalog=CAT, spec=SPEC)
    zb = tiled_build.ZoneBuild(plan, inputs, Path("unused.zarr"), "x")
    tasks = {t.key: t for t in tiled_build.tile_tasks(zb, 2)}
    assert len(tasks) == 8
    # pass 1 has frames (west, east), pass 2 (west); S2 items cover everything
    assert tasks["0_0"].s1 == ((0,), (0,))
    assert tasks["0_3"].s1 == ((1,), ())
    # tile (0, 1) reads 2 px beyond col 16 (its halo) so it meets the east frame as well
    assert tasks["0_1"].s1 == ((0, 1), (0,))
    assert all(t.s2 == (0, 1, 2) for t in tasks.values())


def test_tiled_build_writes_the_same_date_cloudy_s2(scene, reference, tmp_path):
    """``cube.cloudy``: the tiled build writes ``cloudy_<band>`` + ``cloud_mask`` with the
    pixels ``build_cube`` gives (dilated clouds across tile borders too), the other bands
    unchanged; the mask covers the target's clear pixels that only another date saw."""
    spec = replace(SPEC, cloudy=True)
    ref = build.build_cube(scene, *DATES, catalog=CAT, spec=spec, log=lambda *_: None)
    _tiled(scene, tmp_path / "cube.zarr", spec=spec)
    ds = xr.open_zarr(tmp_path / "cube.zarr")
    _same(ref, ds)
    cloudy = ["cloudy_B02", "cloudy_B03", "cloudy_B04", "cloud_mask"]
    assert [str(b) for b in ds.band.values[-4:]] == cloudy and ds.attrs["cloudy_bands"] == cloudy
    plain = xr.open_zarr(reference[1])
    np.testing.assert_array_equal(ds.cube.sel(band=plain.band.values).values, plain.cube.values)
    mask, clear = ds.cube.sel(band="cloud_mask").values, ds.cube.sel(band="clear").values
    # 07-10: the nearest S2 is 07-08 (a tie with 07-12 goes to the earlier), its cloud kept
    # (white, 0.4) and masked; where 07-12 is clear the target is, under the mask
    np.testing.assert_allclose(ds.cube.sel(band="cloudy_B02").values[0, 6:9, 8:11], 0.4, 1e-6)
    assert (mask[0, 6:9, 8:11] == 1).all() and mask[0, 0, 0] == 0
    assert (mask[0] >= 1 - clear[0]).all() and ((mask[0] == 1) & (clear[0] == 1)).any()
    assert (mask[1] == 0).all()  # 07-22: 07-21 is clear
