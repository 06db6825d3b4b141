"""The inference readers of the prior and the same-date S2 (``build.read_prior``,
``build.read_cloudy``) read and clean S2 dates nearest first and stop once every pixel is
decided: the values are those of the whole stack read and cleaned at once (the cube's
``compose`` path), bit for bit, and the dates past the stop are never read.

Scene (as ``test_infer_inputs``): S1 07-01 ... 08-06 every 12 days, S2 07-03 ... 07-28 every 5
days; 07-18 is clear, 07-23 clouded over, 07-28 nearly all cloud.
"""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube import build
from sar2opt.cube.align import pair_s1_s2, prior_optical, same_date_optical
from sar2opt.cube.window_load import read_optical

SIZE_KM = 1.28  # 128 x 128 px
CAT = CatalogSpec(stac_url="http://127.0.0.1:1/stac")
# a 30-day prior: up to 6 dates for 08-06, latest first 07-28, 07-23, 07-18 (clear), ...
SPEC = CubeSpec(epsg=32721, max_dt_days=6, prior_days=30, cloud_dilate_px=3)
BANDS = tuple(CAT.opt_bands)


@pytest.fixture(scope="module")
def s2(tmp_path_factory) -> list[dict]:
    items = generate_scene(
        tmp_path_factory.mktemp("syn-lazy") / "cat", size_km=SIZE_KM, n_s1=4, n_s2=6
    )
    return [it for it in items if it["collection"] == CAT.s2_collection]


def _count_reads(monkeypatch) -> list[str]:
    """The S2 item ids ``build`` reads from now on, in order."""
    seen: list[str] = []

    def counting(items, *a, **k):
        seen.extend(it["id"] for it in items)
        return read_optical(items, *a, **k)

    monkeypatch.setattr(build, "read_optical", counting)
    return seen


def _stack(items, grid):
    """Every item read and cleaned at once: what ``compose`` works on."""
    opt = read_optical(items, grid, BANDS)
    return opt, build.clear_mask(opt, BANDS, SPEC)


# windows (row, col, height, width) of the scene's grid: whole, and one inside it
WINDOWS = [(0, 0, 128, 128), (40, 24, 64, 80)]


@pytest.mark.parametrize("window", WINDOWS)
def test_the_prior_read_date_by_date_is_the_stacks_and_stops_early(s2, window, monkeypatch):
    grid = scene_grid(SIZE_KM).subgrid(*window)
    time = "2023-08-06T09:15:00Z"
    items = build.prior_items(s2, time, SPEC)
    assert len(items) == 6  # every S2 date lies in this prior window
    opt, clear = _stack(items, grid)
    want = prior_optical(
        opt, clear, [build._s2_time(it) for it in items], build._naive(time),
        SPEC.max_dt_days, SPEC.prior_days,
    )  # fmt: skip
    seen = _count_reads(monkeypatch)
    got = build.read_prior(s2, grid, time, opt_bands=BANDS, spec=SPEC)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).all()  # 07-18 is clear: every pixel has a prior
    # latest first, one date at a time, none after the clear 07-18
    assert [i.split("_")[3][:8] for i in seen] == ["20230728", "20230723", "20230718"]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(
    ("time", "first"),
    [("2023-07-25T09:15:00Z", "20230723"), ("2023-07-13T09:15:00Z", "20230713")],
)
def test_the_same_date_s2_read_date_by_date_is_the_stacks(s2, window, time, first, monkeypatch):
    grid = scene_grid(SIZE_KM).subgrid(*window)
    items = build.cloudy_items(s2, time, SPEC)
    assert len(items) >= 2  # a later date lies within ±max_dt_days too
    opt, clear = _stack(items, grid)
    (order,) = pair_s1_s2(
        [build._naive(time)], [build._s2_time(it) for it in items], SPEC.max_dt_days
    )
    want_refl, want_mask = same_date_optical(opt, clear, order)
    seen = _count_reads(monkeypatch)
    got = build.read_cloudy(s2, grid, time, opt_bands=BANDS, spec=SPEC)
    np.testing.assert_array_equal(got[:-1], want_refl)
    np.testing.assert_array_equal(got[-1], want_mask)
    # the nearest date covers the window: it is the only one read
    assert [i.split("_")[3][:8] for i in seen] == [first]


def test_a_window_without_data_in_the_nearest_date_reads_on(s2, monkeypatch):
    """Past the scene's edge the nearest date has no pixels: the reader goes on to the next
    date and then to the end (the rule's ``break`` never fires), as the stack does."""
    grid = scene_grid(SIZE_KM).subgrid(100, 100, 64, 64)  # 28 x 28 px of it inside the scene
    time = "2023-07-25T09:15:00Z"
    items = build.cloudy_items(s2, time, SPEC)
    opt, clear = _stack(items, grid)
    (order,) = pair_s1_s2(
        [build._naive(time)], [build._s2_time(it) for it in items], SPEC.max_dt_days
    )
    want = same_date_optical(opt, clear, order)
    seen = _count_reads(monkeypatch)
    got = build.read_cloudy(s2, grid, time, opt_bands=BANDS, spec=SPEC)
    np.testing.assert_array_equal(got[:-1], want[0])
    np.testing.assert_array_equal(got[-1], want[1])
    assert len(seen) == len(items) == 2
    assert np.isnan(got[:-1, -1, -1]).all() and got[-1, -1, -1] == 1
