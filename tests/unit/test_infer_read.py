"""Windowed COG reads for inference (``sar2opt.infer.read``) against the stackstac path."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from sar2opt.cube.clean_s1 import db_to_linear
from sar2opt.cube.load import load_sar
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.read import (
    CatalogSar,
    mosaic_last_on_top,
    overlap_1d,
    pixel_offset,
    read_sar_db,
)
from sar2opt.infer.run import Block, Strip, strip_tasks, strip_tiles, strip_window

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


def test_strip_tasks_take_every_block_of_a_column_of_a_block_row() -> None:
    rows = [Block(0, "a", 0, j) for j in (0, 1, 2, 4, 5)]
    rows += [Block(0, "a", 1, 0), Block(1, "b", 1, 1)]
    got = [(s.t, s.bi, list(s.bjs)) for s in strip_tasks(rows, 2)]
    # time by time, down each column of 2-block strips, then the next column
    assert got == [(0, 0, [0, 1]), (0, 1, [0]), (0, 0, [2]), (0, 0, [4, 5]), (1, 1, [1])]
    # a gap (block 3 done or outside the AOI) does not split a column: one writer per shard
    got = [(s.t, s.bi, list(s.bjs)) for s in strip_tasks(rows, 8)]
    assert got == [(0, 0, [0, 1, 2, 4, 5]), (0, 1, [0]), (1, 1, [1])]
    with pytest.raises(ValueError):
        strip_tasks(rows, 0)


def test_strip_tasks_cut_on_columns_of_strips_and_keep_the_time_order() -> None:
    # a row starting at block 3 is cut at block 4, so its strips line up with the shards
    rows = [Block(5, "late", 0, j) for j in range(3, 10)]
    rows += [Block(5, "late", 1, j) for j in range(0, 10)]
    rows += [Block(2, "early", 0, 0)]  # times keep the order given
    got = [(s.t, s.bi, list(s.bjs)) for s in strip_tasks(rows, 4)]
    assert got == [
        (5, 0, [3]),
        (5, 1, [0, 1, 2, 3]),
        (5, 0, [4, 5, 6, 7]),
        (5, 1, [4, 5, 6, 7]),
        (5, 0, [8, 9]),
        (5, 1, [8, 9]),
        (2, 0, [0]),
    ]


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
    sar = CatalogSar(SCENE, ((*frames,),), ("vv", "vh"))
    strip = Strip(0, "x", 1, (1, 2, 4))  # a gap: block 3 is done
    tiles = strip_tiles(lat, strip, sar.read(0, strip_window(lat, 1, strip.bjs)))
    assert len(tiles) == 3
    for bj, tile in zip(strip.bjs, tiles, strict=True):
        one = sar.read(0, lat.window(1, bj))
        assert tile.shape == (2, 32, 32)
        np.testing.assert_array_equal(tile, one)


def _tif(path, data: np.ndarray, nodata=None, mask: np.ndarray | None = None) -> str:
    import rasterio

    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
        dtype=data.dtype, crs="EPSG:32721", transform=SCENE.transform, nodata=nodata,
        tiled=True, blockxsize=32, blockysize=32,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
        if mask is not None:
            dst.write_mask(mask.astype("uint8") * 255)  # an internal mask, no nodata value
    return str(path)


@pytest.mark.parametrize(
    "kind", ["nodata", "nan-nodata", "uint16-nodata", "uint16-all-valid", "mask", "all-valid"]
)
def test_tile_reads_mask_exactly_as_a_masked_window_read(tmp_path, kind) -> None:
    import rasterio
    from rasterio.windows import Window

    from sar2opt.infer import read
    from sar2opt.infer.read import close_all, read_asset

    rng = np.random.default_rng(1)
    data = rng.uniform(0.01, 1.0, SCENE.shape).astype("float32")
    hole = np.zeros(SCENE.shape, bool)
    hole[10:50, 5:70] = rng.random((40, 65)) < 0.3
    mask = None
    if kind == "nodata":
        data[hole], nodata = -32768, -32768
    elif kind == "nan-nodata":
        data[hole], nodata = np.nan, np.nan
    elif kind == "uint16-nodata":
        data = (data * 1000).astype("uint16")
        data[hole], nodata = 0, 0
    elif kind == "uint16-all-valid":
        data, nodata = (data * 1000).astype("uint16"), None
    elif kind == "mask":
        nodata, mask = None, ~hole
    else:
        nodata = None
    href = _tif(tmp_path / f"{kind}.tif", data, nodata, mask)
    # a window across tile edges and over the raster's south-east corner
    grid = GridSpec(32721, 10.0, (700_250.0, 9_499_900.0, 701_300.0, 9_500_500.0))
    close_all()
    got = read_asset(href, grid)
    with rasterio.open(href) as ds:
        ref = ds.read(1, window=Window(25, 30, 95, 50), out_dtype="float32", masked=True)
    np.testing.assert_array_equal(got[:50, :95], ref.filled(np.nan))
    assert np.isnan(got[50:]).all() and np.isnan(got[:, 95:]).all()  # outside the raster
    assert np.isnan(got[:50, :95]).any() == (not kind.endswith("all-valid"))
    # uint16 tiles stay uint16 in the cache (half the bytes), the rest float32 with NaN
    kept = {t.dtype for t in read._blocks.values()}
    assert kept == {np.dtype("uint16" if kind.startswith("uint16") else "float32")}


def test_tile_cache_decodes_each_tile_once_and_evicts_to_its_cap(frames, monkeypatch) -> None:
    import rasterio

    from sar2opt.infer import read

    href = frames[0]["assets"]["vv"]["href"]
    top = GridSpec(32721, 10.0, (700_000.0, 9_500_400.0, 701_200.0, 9_500_800.0))  # rows 0-40
    below = GridSpec(32721, 10.0, (700_000.0, 9_500_000.0, 701_200.0, 9_500_560.0))  # 24-80
    read.close_all()
    decoded = []
    real_read = rasterio.DatasetReader.read
    monkeypatch.setattr(
        rasterio.DatasetReader,
        "read",
        lambda self, *a, **kw: (decoded.append(kw.get("window")), real_read(self, *a, **kw))[1],
    )
    a = read.read_asset(href, top)
    n_top = len(decoded)
    b = read.read_asset(href, below)
    assert n_top == 2 * 4  # tile rows 0-1 x 4 tile columns of 32 px
    assert len(decoded) == n_top + 4  # the row the windows share is not decoded again
    np.testing.assert_array_equal(a[24:], b[:16])

    cap = 32 * 32 * 4 * 3  # bytes: three whole tiles
    monkeypatch.setattr(read, "BLOCK_CACHE_MB", cap / 2**20)
    read.close_all()
    decoded.clear()
    assert np.array_equal(read.read_asset(href, below), b, equal_nan=True)
    assert len(decoded) == 3 * 4  # tile rows 0-2 x 4 columns, each decoded once
    assert len(read._blocks) < 3 * 4 and read._blocks_bytes <= cap  # evicted to the cap
    assert read._blocks_bytes == sum(t.nbytes for t in read._blocks.values())
    read.close_all()
