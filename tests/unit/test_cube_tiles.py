"""The tile plan: UTM zones of an AOI, per-zone grids, tile lattices, the --dry-run table."""

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from sar2opt.aoi import grid_for_aoi, load_aoi
from sar2opt.config import CubeSpec, check_cube
from sar2opt.cube.tiles import format_plan, plan_zones
from sar2opt.errors import ConfigError
from sar2opt.grid import GridSpec
from sar2opt.zones import Lattice, blocks_meeting, split_zones, to_grid_crs, utm_zone_numbers
from tests.helpers.data import SHARED_DATA

AMAZON = SHARED_DATA / "aoi" / "amazon.geojson"
needs_amazon = pytest.mark.skipif(not AMAZON.is_file(), reason=f"{AMAZON} not found")


def test_lattice_cores_partition_the_grid_and_halo_is_clipped():
    grid = GridSpec(32721, 10.0, (0, 0, 15000, 10000))  # 1000 x 1500 px
    lat = Lattice(grid, 256)  # cube tiles: no overlap, core = tile
    assert (lat.n_rows, lat.n_cols) == (4, 6)
    cover = np.zeros(grid.shape, int)
    for r in range(lat.n_rows):
        for c in range(lat.n_cols):
            r0, c0, r1, c1 = lat.core(r, c)
            cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all()  # every pixel in exactly one tile
    assert lat.core(3, 5) == (768, 1280, 1000, 1500)
    assert lat.halo(0, 0, 3) == (0, 0, 259, 259)
    assert lat.halo(1, 1, 3) == (253, 253, 262, 262)
    assert lat.halo(3, 5, 3) == (765, 1277, 235, 223)
    with pytest.raises(IndexError):
        lat.core(4, 0)


def test_blocks_meeting_matches_a_tile_by_tile_check():
    grid = GridSpec(32721, 10.0, (0, 0, 20000, 20000))
    lat = Lattice(grid, 300)
    # an L shape with a hole, and a separate island
    shape_ = Polygon(
        [(1000, 1000), (15000, 1000), (15000, 6000), (6000, 6000), (6000, 18000), (1000, 18000)],
        holes=[[(2000, 2000), (4500, 2000), (4500, 4500), (2000, 4500)]],
    ).union(box(17000, 17000, 17500, 19990))
    fast = set(blocks_meeting(lat, shape_))
    slow = set()
    for r in range(lat.n_rows):
        for c in range(lat.n_cols):
            r0, c0, r1, c1 = lat.core(r, c)
            if box(*grid.window_bounds(r0, c0, r1 - r0, c1 - c0)).intersection(shape_).area > 0:
                slow.add((r, c))
    # strips may include tiles inside a hole's x-interval; never miss one that meets the shape
    assert slow <= fast
    assert len(fast - slow) <= 8
    assert len(blocks_meeting(lat, None)) == lat.n_rows * lat.n_cols


def test_small_aoi_keeps_the_grid_build_cube_uses():
    aoi = box(-55.03, -5.03, -54.97, -4.97)
    (zone,) = split_zones(aoi, 10.0)
    assert zone.grid == grid_for_aoi(aoi, 10.0) and zone.name == "21S"
    # across the 21/22 boundary (-54°): two grids, each in its own zone, each its own part
    aoi2 = box(-54.05, -5.02, -53.95, -4.98)
    zones = split_zones(aoi2, 10.0)
    assert [z.epsg for z in zones] == [32721, 32722]
    assert zones[0].aoi.bounds[2] == pytest.approx(-54.0)
    assert zones[1].aoi.bounds[0] == pytest.approx(-54.0)
    # a fixed EPSG keeps one grid
    assert len(split_zones(aoi2, 10.0, epsg=32721)) == 1


def test_check_tiling_needs_whole_chunks():
    check_cube(CubeSpec(tile_px=1024, chunk_px=512))
    with pytest.raises(ConfigError, match="multiple"):
        check_cube(CubeSpec(tile_px=1000, chunk_px=512))
    with pytest.raises(ConfigError, match="cpus_per_tile"):
        check_cube(CubeSpec(cpus_per_tile=0))


@needs_amazon
def test_amazon_plan_covers_each_zone_part():
    aoi = load_aoi(AMAZON)
    assert utm_zone_numbers(aoi) == [18, 19, 20, 21, 22, 23]
    spec = CubeSpec(res_m=10.0, tile_px=2048, chunk_px=512)
    plans = plan_zones(aoi, spec)
    assert [p.zone.epsg for p in plans] == [32718, 32719, 32720, 32721, 32722, 32723]
    total_area_px = 0.0
    for p in plans:
        part = to_grid_crs(p.zone.aoi, p.zone.epsg)
        area_px = part.area / spec.res_m**2
        total_area_px += area_px
        # tiles cover the part; edge tiles overhang it by less than one tile ring
        assert area_px <= p.pixels <= area_px * 1.35, p.zone.name
        assert 0 < len(p.tiles) < p.lattice.n_rows * p.lattice.n_cols
        assert box(*p.zone.grid.bounds).contains(part.buffer(-1))
    # the biome is ~4.2 million km² (README of the AOI): ~4.2e10 px at 10 m
    assert 3.9e10 < total_area_px < 4.5e10


@needs_amazon
def test_dry_run_prints_the_zone_plan_without_a_catalog(capsys):
    from jobs.build_cube import main, parse_args

    args = parse_args(
        [
            "--aoi",
            str(AMAZON),
            "--start",
            "2023-07-01",
            "--end",
            "2023-08-31",
            "--out",
            "/nonexistent/never-written.zarr",
            "--stac-url",
            "http://127.0.0.1:9",  # unreachable: a dry run must not search
            "--set",
            "cube.tile_px=2048",
            "--dry-run",
        ]
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 zone(s), tiles of 2048 px")
    for epsg in range(32718, 32724):
        assert f"  {epsg - 32700}S (EPSG:{epsg}): grid" in out
    expected = plan_zones(load_aoi(AMAZON), CubeSpec(tile_px=2048))
    assert f"total: {sum(len(p.tiles) for p in expected)} tiles" in out
    assert format_plan(expected, 7)[-1] in out  # 2 SAR + 4 optical + clear
