"""One zone rule, one zone name, one lattice: the cube plan, the inference plan and the synthetic
generator cut the same AOI into the same zones, grids and blocks."""

from __future__ import annotations

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from sar2opt.aoi import grid_for_aoi
from sar2opt.catalog.synthetic import region_zones
from sar2opt.config import CubeSpec
from sar2opt.cube.tiles import plan_zones
from sar2opt.grid import GridSpec, utm_epsg
from sar2opt.infer.plan import BlockLattice, make_plan
from sar2opt.zones import (
    Lattice,
    blocks_by_row,
    blocks_meeting,
    split_zones,
    to_grid_crs,
    utm_zone_numbers,
    zone_name,
)

RES_M = 10.0
TILE_PX = 1024  # a cube tile_px (multiple of chunk_px) and an inference tile_px (of 32)


def _infer_plan(parts, tile_px: int = TILE_PX, overlap_px: int = 0):
    return make_plan(
        parts, tile_px=tile_px, overlap_px=overlap_px, dates=1, dates_note="", sar_bands=2,
        out_bands=4, hypotheses=1, s2_per_date=0.0, opt_in_bands=4, gpu_tiles_per_s=1.0,
    )  # fmt: skip


def _three_ways(bbox: tuple[float, float, float, float]):
    """Zones of ``bbox`` as the cube plan, the inference plan and the generator see them."""
    aoi = box(*bbox)
    cube = plan_zones(aoi, CubeSpec(res_m=RES_M, tile_px=TILE_PX, chunk_px=512))
    infer = split_zones(aoi, RES_M)
    synth = region_zones(bbox, RES_M)
    return cube, infer, synth


def test_zone_name_is_number_and_hemisphere() -> None:
    assert zone_name(32721) == "21S"
    assert zone_name(32609) == "09N"
    assert zone_name(32760) == "60S"
    assert zone_name(3857) == "EPSG3857"
    assert zone_name(32661) == "EPSG32661"  # UPS north, not a UTM zone
    assert zone_name(utm_epsg(-54.5, -5.0)) == "21S" and zone_name(utm_epsg(-53.5, 0.0)) == "22N"


@pytest.mark.parametrize(
    "bbox, zone",
    [
        ((-55.0, -5.01, -54.0, -4.99), "21S"),  # east edge on the 21/22 meridian (-54°)
        ((-54.0, -5.01, -53.0, -4.99), "22S"),  # west edge on it
    ],
)
def test_aoi_touching_a_zone_edge_along_a_line_stays_in_one_zone(bbox, zone) -> None:
    cube, infer, synth = _three_ways(bbox)
    assert utm_zone_numbers(box(*bbox)) == [int(zone[:2])]
    for parts in ([p.zone for p in cube], infer, synth):
        assert [p.name for p in parts] == [zone]
        assert parts[0].grid == grid_for_aoi(box(*bbox), RES_M)  # the single-zone grid
    assert [z.name for z in _infer_plan(infer).zones] == [zone]
    # a polygon meeting zone 22 at a single point is one zone too
    tri = Polygon([(-55.0, -5.0), (-54.0, -4.5), (-55.0, -4.0)])
    assert [p.name for p in split_zones(tri, RES_M)] == ["21S"]


def test_aoi_across_three_zones_same_zones_grids_and_blocks_everywhere() -> None:
    bbox = (-55.5, -5.03, -47.5, -4.97)  # zones 21, 22 and 23
    cube, infer, synth = _three_ways(bbox)
    names = ["21S", "22S", "23S"]
    assert [p.zone.name for p in cube] == [p.name for p in infer] == names
    assert [p.name for p in synth] == names
    assert [p.epsg for p in synth] == [32721, 32722, 32723]
    assert [p.zone.grid for p in cube] == [p.grid for p in infer] == [p.grid for p in synth]
    # the parts are cut at the zone meridians -54° and -48°
    assert [p.aoi.bounds[0] for p in infer] == pytest.approx([-55.5, -54.0, -48.0])
    assert [p.aoi.bounds[2] for p in infer] == pytest.approx([-54.0, -48.0, -47.5])
    # an inference lattice with the cube's tile size and no overlap has the cube's tiles
    figures = _infer_plan(infer)
    for plan, part, fig in zip(cube, infer, figures.zones, strict=True):
        lat = BlockLattice(part.grid, TILE_PX, 0)
        geom = to_grid_crs(part.aoi, part.epsg)
        blocks = [(bi, int(bj)) for bi, cols in blocks_by_row(lat, geom) for bj in cols]
        assert blocks == list(plan.tiles) and fig.blocks == len(plan.tiles) > 0
        assert fig.name == plan.zone.name and fig.epsg == plan.zone.epsg
        assert all(lat.core(*t) == plan.lattice.core(*t) for t in plan.tiles)


def test_hemisphere_is_each_parts_centroid() -> None:
    north_in_21 = box(-55.0, 0.5, -54.5, 1.5)
    south_in_22 = box(-53.5, -1.5, -53.0, -0.5)
    parts = split_zones(MultiPolygon([north_in_21, south_in_22]), RES_M)
    assert [(p.name, p.epsg) for p in parts] == [("21N", 32621), ("22S", 32722)]
    # a fixed EPSG keeps one part and one grid whatever the zones
    (one,) = split_zones(MultiPolygon([north_in_21, south_in_22]), RES_M, epsg=32721)
    assert one.epsg == 32721 and one.name == "21S"


def test_a_block_counts_only_when_the_aoi_has_area_in_its_core() -> None:
    g = GridSpec(32721, 10.0, (500_000.0, 9_000_000.0, 510_000.0, 9_010_000.0))  # 1000 px
    lat = Lattice(g, 100)  # 100 px = 1 km blocks
    x0, y1 = g.bounds[0], g.bounds[3]
    exact = box(x0 + 1000, y1 - 2000, x0 + 2000, y1 - 1000)  # block (1, 1) exactly
    assert blocks_meeting(lat, exact) == [(1, 1)]  # neighbours it touches along a line: out
    assert blocks_meeting(lat, exact.buffer(0.5, join_style="mitre")) == [
        (r, c) for r in (0, 1, 2) for c in (0, 1, 2)
    ]
    # the inference lattice walks the same way (core = block_px squares)
    blat = BlockLattice(g, 128, 28)
    assert blocks_meeting(blat, exact) == [(1, 1)]


def test_window_core_and_halo() -> None:
    g = GridSpec(32721, 10.0, (0.0, 0.0, 3000.0, 2500.0))  # 250 x 300 px
    lat = BlockLattice(g, 128, 28)  # 100 px blocks, 14 px context
    assert (lat.n_rows, lat.n_cols, lat.halo_px) == (3, 3, 14)
    assert lat.core(1, 1) == (100, 100, 200, 200)
    assert lat.window(1, 1) == (86, 86, 128, 128)  # centred on the core
    assert lat.window(2, 2) == (122, 172, 128, 128)  # shifted inward, same size
    assert lat.core(2, 2) == (200, 200, 250, 300)  # clipped
    assert lat.halo(2, 2, 5) == (195, 195, 55, 105)  # grown and clipped, not shifted
    assert lat.halo(0, 0, 5) == (0, 0, 105, 105)
    with pytest.raises(IndexError):
        lat.core(3, 0)
    back = BlockLattice.from_dict(lat.to_dict())
    assert back == lat and type(back) is BlockLattice
    assert lat.to_dict() == {"grid": g.to_dict(), "tile_px": 128, "overlap_px": 28}
    with pytest.raises(ValueError, match="multiple of 32"):
        BlockLattice(g, 100, 0)  # the model's windows; the cube's tiles have no such rule
    assert Lattice(g, 100).block_px == 100
    with pytest.raises(ValueError, match="overlap_px"):
        Lattice(g, 64, 64)
