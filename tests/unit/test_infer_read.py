"""Windowed COG reads for inference (``sar2opt.infer.read``) against the stackstac path."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from sar2opt.cube.load import db_to_linear, load_sar
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.read import mosaic_last_on_top, overlap_1d, pixel_offset, read_sar_db
from sar2opt.infer.run import read_sar_strip, strip_tasks

SCENE = GridSpec(32721, 10.0, (700_000.0, 9_500_000.0, 701_200.0, 9_500_800.0))  # 80 x 120 px


def test_pixel_offset_whole_pixels_only() -> None:
    src = Affine(10, 0, 700_000, 0, -10, 9_500_800)
    assert pixel_offset(src, Affine(10, 0, 700_030, 0, -10, 9_500_700)) == (10, 3)
    assert pixel_offset(src, Affine(10, 0, 699_980, 0, -10, 9_500_820)) == (-2, -2)
    assert pixel_offset(src, Affine(10, 0, 700_005, 0, -10, 9_500_700)) is None  # half pixel
    assert pixel_offset(src, Affine(20, 0, 700_000, 0, -20, 9_500_800)) is None  # other size
    assert pixel_offset(Affine(10, 1, 700_000, 0, -10, 9_500_800), src) is None  # rotated


def test_overlap_1d_clips_to_the_raster() -> None:
    assert overlap_1d(-5, 10, 20) == (0, 5, 5)
    assert overlap_1d(15, 10, 20) == (15, 0, 5)
    assert overlap_1d(3, 4, 20) == (3, 0, 4)
    assert overlap_1d(25, 10, 20)[2] == 0 and overlap_1d(-12, 10, 20)[2] == 0


def test_mosaic_last_on_top_fills_holes_from_below() -> None:
    nan = np.nan
    layers = np.array([[1.0, 2.0, nan, nan], [nan, 5.0, 6.0, nan]])
    np.testing.assert_array_equal(mosaic_last_on_top(layers), [1.0, 5.0, 6.0, nan])


def test_strip_tasks_groups_consecutive_blocks_of_a_row() -> None:
    rows = [{"t": 0, "time": "a", "bi": 0, "bj": j} for j in (0, 1, 2, 4, 5)]
    rows += [{"t": 0, "time": "a", "bi": 1, "bj": 0}, {"t": 1, "time": "b", "bi": 1, "bj": 1}]
    got = [(s["t"], s["bi"], s["bjs"]) for s in strip_tasks(rows, 2)]
    assert got == [(0, 0, [0, 1]), (0, 0, [2]), (0, 0, [4, 5]), (0, 1, [0]), (1, 1, [1])]
    assert sum(len(s["bjs"]) for s in strip_tasks(rows, 8)) == len(rows)
    with pytest.raises(ValueError):
        strip_tasks(rows, 0)


def _frame(tmp_path, name: str, grid: GridSpec, db: dict, hole: slice | None) -> dict:
    import rasterio

    assets = {}
    for band, values in db.items():
        lin = db_to_linear(values).astype("float32")
        if hole is not None:
            lin[:, hole] = -32768  # the frame's nodata: its swath ends there
        path = tmp_path / f"{name}_{band}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", height=grid.height, width=grid.width, count=1,
            dtype="float32", crs=f"EPSG:{grid.epsg}", transform=grid.transform, nodata=-32768,
            tiled=True, blockxsize=32, blockysize=32,
        ) as dst:  # fmt: skip
            dst.write(lin, 1)
        assets[band] = {"href": str(path), "type": "image/tiff; application=geotiff"}
    w, s, e, n = lonlat_bounds(grid)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": name,
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": f"2023-07-01T09:15:{len(name):02d}Z",
            "proj:epsg": grid.epsg,
            "proj:shape": list(grid.shape),
            "proj:transform": list(grid.transform)[:6],
        },
        "links": [],
        "assets": assets,
    }


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[dict]:
    """Two frames of one pass: the second (on top) shifted 40 px east, its west end nodata."""
    tmp = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    second = GridSpec(32721, 10.0, (700_400.0, 9_500_000.0, 701_600.0, 9_500_800.0))
    out = []
    for name, grid, hole in (("f1", SCENE, None), ("f22", second, slice(0, 10))):
        db = {"vv": rng.uniform(-20, -5, grid.shape), "vh": rng.uniform(-26, -12, grid.shape)}
        out.append(_frame(tmp, name, grid, db, hole))
    return out


def test_aligned_reads_are_identical_to_stackstac(frames) -> None:
    # a window hanging over the scene's north-west corner and across both frames
    grid = GridSpec(32721, 10.0, (699_900.0, 9_500_100.0, 701_500.0, 9_500_900.0))
    ref = load_sar(frames, grid, ["vv", "vh"]).isel(time=0).values
    got = read_sar_db(frames, grid, ["vv", "vh"])
    assert np.isnan(got).any() and np.isfinite(got).mean() > 0.5
    np.testing.assert_array_equal(got, ref)


def test_resampled_reads_match_stackstac(frames) -> None:
    # 20 m pixels on 10 m frames: the WarpedVRT path (nearest, as stackstac)
    grid = GridSpec(32721, 20.0, (700_100.0, 9_500_040.0, 701_300.0, 9_500_640.0))
    ref = load_sar(frames, grid, ["vv", "vh"]).isel(time=0).values
    got = read_sar_db(frames, grid, ["vv", "vh"])
    both = np.isfinite(ref) & np.isfinite(got)
    assert (np.isfinite(ref) == np.isfinite(got)).mean() > 0.99
    assert both.mean() > 0.9
    np.testing.assert_allclose(got[both], ref[both], atol=1e-4)


def test_strip_read_equals_block_reads(frames) -> None:
    lat = BlockLattice(SCENE, 32, 8)  # 24 px blocks, windows of 32 px
    items = [frames]
    kw = {"lattice": lat.to_dict(), "items_by_time": items, "bands": ["vv", "vh"]}
    strip = {"t": 0, "time": "x", "bi": 1, "bjs": [1, 2, 3, 4]}
    rows = read_sar_strip(strip, **kw)
    assert [r["bj"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        (single,) = read_sar_strip({"t": 0, "time": "x", "bi": 1, "bjs": [r["bj"]]}, **kw)
        one = single["sar"]
        assert r["sar"].shape == (2, 32, 32)
        np.testing.assert_array_equal(r["sar"], one)
