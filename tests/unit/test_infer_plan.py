"""Block lattice, per-zone split and the --dry-run plan on the real Amazon outline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapely.geometry import box

from sar2opt.aoi import load_aoi
from sar2opt.grid import GridSpec
from sar2opt.infer.plan import BlockLattice, estimate_dates, format_plan, make_plan
from sar2opt.infer.publish import output_items
from sar2opt.zones import blocks_by_row, count_blocks, split_zones, to_grid_crs
from tests.helpers.data import SHARED_DATA

AMAZON = SHARED_DATA / "aoi" / "amazon.geojson"


def _grid(h: int, w: int) -> GridSpec:
    return GridSpec(32633, 10.0, (500_000.0, 4_000_000.0, 500_000.0 + 10 * w, 4_000_000.0 + 10 * h))


@pytest.mark.parametrize(
    "h, w, tile, overlap", [(200, 300, 64, 16), (1000, 700, 256, 32), (20, 45, 256, 32)]
)
def test_blocks_partition_grid_and_windows_hold_their_core(h, w, tile, overlap) -> None:
    lat = BlockLattice(_grid(h, w), tile, overlap)
    cover = np.zeros((h, w), int)
    for bi, cols in blocks_by_row(lat, None):
        for bj in cols:
            r0, c0, r1, c1 = lat.core(bi, bj)
            cover[r0:r1, c0:c1] += 1
            r, c, wh, ww = lat.window(bi, bj)
            assert 0 <= r <= r0 and r1 <= r + wh <= h and 0 <= c <= c0 and c1 <= c + ww <= w
            assert (wh, ww) == (min(tile, h), min(tile, w))  # one batchable window shape
            if h > tile and 0 < r0 and r1 < h - lat.halo_px:  # interior: full halo above
                assert r0 - r >= lat.halo_px
    assert (cover == 1).all()  # every pixel written by exactly one block


def test_blocks_by_row_keeps_only_blocks_meeting_the_geometry() -> None:
    g = _grid(1000, 1000)
    lat = BlockLattice(g, 128, 28)  # 100 px blocks, 10 x 10
    x0, y1 = g.bounds[0], g.bounds[3]
    geom = box(x0 + 1500, y1 - 3500, x0 + 2500, y1 - 1500)  # px cols 150-250, rows 150-350
    got = {(bi, int(bj)) for bi, cols in blocks_by_row(lat, geom) for bj in cols}
    assert got == {(bi, bj) for bi in (1, 2, 3) for bj in (1, 2)}
    assert count_blocks(lat, geom) == 6 and count_blocks(lat, None) == 100


@pytest.mark.skipif(not AMAZON.is_file(), reason="shared AOI not found")
def test_amazon_dry_run_plan_per_utm_zone() -> None:
    aoi = load_aoi(AMAZON)
    parts = split_zones(aoi, 10.0)
    assert [p.name for p in parts] == ["18S", "19S", "20S", "21S", "22S", "23S"]
    assert [p.epsg for p in parts] == list(range(32718, 32724))
    plan = make_plan(
        parts, tile_px=256, overlap_px=32, dates=estimate_dates("2023-01-01", "2023-12-31", 12),
        dates_note="estimated", sar_bands=2, out_bands=4, hypotheses=2, s2_per_date=0.0,
        opt_in_bands=4, gpu_tiles_per_s=50.0,
    )  # fmt: skip
    area = sum(z.area_km2 for z in plan.zones)
    assert 4.1e6 < area < 4.3e6  # the biome's 4.2 million km2
    block_km2 = (224 * 10 / 1000) ** 2
    assert area <= plan.blocks * block_km2 < 1.02 * area  # covered, only edge blocks extra
    assert plan.dates == 31 and plan.tasks == plan.blocks * 31
    assert plan.bytes_read == plan.tasks * 256 * 256 * 2 * 4
    # optical float32 x 4 bands, source uint8, uncertainty float32, obs_time int32
    assert plan.bytes_written == plan.tasks * 224 * 224 * (4 * 4 + 1 + 4 + 4)
    assert plan.gpu_hours == pytest.approx(plan.tasks * 2 / 50 / 3600)
    text = format_plan(plan)
    assert "zone      21S EPSG:32721" in text and "GPU-hours" in text
    assert "periods:" not in text
    # monthly: the same work, 12 output steps instead of 31
    monthly = dataclasses.replace(plan, periods=12, period_note="1M")
    assert monthly.gpu_hours == plan.gpu_hours and monthly.bytes_read == plan.bytes_read
    assert monthly.bytes_written * 31 == plan.bytes_written * 12
    assert "periods: 12 (1M): one output time step each" in format_plan(monthly)


def test_small_aoi_keeps_single_centre_zone_grid() -> None:
    from sar2opt.aoi import grid_for_aoi

    aoi = box(-54.05, -6.05, -53.95, -5.95)  # straddles the 21/22 border at -54
    aoi2 = box(-55.2, -6.05, -55.1, -5.95)
    assert len(split_zones(aoi2, 10.0)) == 1
    assert split_zones(aoi2, 10.0)[0].grid == grid_for_aoi(aoi2, 10.0)
    assert len(split_zones(aoi, 10.0, epsg=32721)) == 1
    parts = split_zones(aoi, 10.0)
    assert [p.epsg for p in parts] == [32721, 32722]
    assert sum(to_grid_crs(p.aoi, p.epsg).area for p in parts) == pytest.approx(
        to_grid_crs(aoi, 32721).area, rel=2e-3
    )


def test_output_items_one_per_time_step() -> None:
    attrs = {
        "times_iso": ["2023-07-03T05:43:12Z", "2023-07-15T05:43:14Z"],
        "s1_item_ids": [["a", "b"], ["c"]],
        "grid": {"epsg": 32721, "res_m": 10.0, "bounds": [700_000, 9_300_000, 700_500, 9_300_200]},
        "checkpoint_sha256": "ab",
    }
    items = output_items("m.zarr.partial", attrs, box(-55, -6, -54.9, -5.9), ["B04"])
    assert [it["id"] for it in items] == ["m-20230703T054312", "m-20230715T054314"]
    assert items[1]["properties"]["sar2opt:s1_item_ids"] == ["c"]
    assert items[0]["properties"]["proj:code"] == "EPSG:32721"
    assert items[0]["properties"]["proj:shape"] == [20, 50]
    assert items[0]["properties"]["proj:transform"] == [10, 0, 700_000, 0, -10, 9_300_200]
    assert items[0]["properties"]["proj:bbox"] == [700_000, 9_300_000, 700_500, 9_300_200]
    assert items[0]["assets"]["zarr"]["href"] == ".."
    import pystac

    assert pystac.Item.from_dict(items[0]).datetime.year == 2023
