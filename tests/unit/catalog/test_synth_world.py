"""The synthetic Earth is one world: same pixel for the same place and date at any extent or
tiling, revisit lattices, UTM zones, the DEM collection and the ``sar2opt synth`` command."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from sar2opt.catalog import noise
from sar2opt.catalog.items import DEM_COLLECTION
from sar2opt.catalog.synthetic import (
    SynthSpec,
    check_bbox,
    generate_region,
    generate_scene,
    s1_dates,
    s2_dates,
)
from sar2opt.catalog.terrain import TerrainSpec
from sar2opt.cli import main
from sar2opt.errors import Sar2OptError


def _window(href: str, bounds) -> np.ndarray:
    with rasterio.open(href) as src:
        win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        return src.read(1, window=win)


def test_value_noise_is_a_function_of_place_only():
    key = noise.stream_key(9, 1)
    xs = noise.centres(np.arange(1000, 1300), 10.0)
    ys = noise.centres(np.arange(-50, -250, -1), 10.0)
    big = noise.fbm(xs, ys, key, outer_m=800.0, inner_m=20.0)
    part = noise.fbm(xs[37:101], ys[120:133], key, outer_m=800.0, inner_m=20.0)
    np.testing.assert_array_equal(part, big[120:133, 37:101])
    assert 0.7 < big.std() < 1.3 and abs(big.mean()) < 0.5
    assert np.abs(big).max() <= noise.fbm_bound(800.0, 20.0)
    spk = noise.gamma_speckle(key, np.arange(500), np.arange(400), 4.4)
    assert spk.mean() == pytest.approx(1.0, abs=0.01)
    assert spk.var() == pytest.approx(1 / 4.4, rel=0.05)
    # A fixed threshold gives the asked fraction on any patch (here far from the calibration).
    thr = noise.fbm_threshold(0.3, 3000.0, 20.0, 0.62)
    f = noise.fbm(
        noise.centres(np.arange(-9e5, -9e5 + 600, dtype=np.int64), 200.0),
        noise.centres(np.arange(4e5, 4e5 - 600, -1, dtype=np.int64), 200.0),
        noise.stream_key(77, 5),
        outer_m=3000.0,
        inner_m=20.0,
        gain=0.62,
    )
    assert (f > thr).mean() == pytest.approx(0.3, abs=0.05)  # over a 120 km square


@pytest.mark.parametrize("relief_m", [40.0, 1500.0])
def test_same_pixel_whatever_the_extent_and_tiling(tmp_path, relief_m):
    spec_a = SynthSpec(terrain=TerrainSpec(relief_m=relief_m), tile_px=1024)
    spec_b = SynthSpec(terrain=TerrainSpec(relief_m=relief_m), tile_px=48)  # many tile seams
    kw = dict(seed=11, n_s1=1, n_s2=2)
    a = generate_scene(tmp_path / "a", size_km=1.28, spec=spec_a, **kw)
    b = generate_scene(
        tmp_path / "b", size_km=0.96, centre_lonlat=(-54.996, -5.003), spec=spec_b, **kw
    )
    by_id = {it["id"]: it for it in b}
    pa = [i for i in a if i["collection"] == "sentinel-2-l2a"][1]
    overlap = (
        max(pa["properties"]["proj:bbox"][0], by_id[pa["id"]]["properties"]["proj:bbox"][0]),
        max(pa["properties"]["proj:bbox"][1], by_id[pa["id"]]["properties"]["proj:bbox"][1]),
        min(pa["properties"]["proj:bbox"][2], by_id[pa["id"]]["properties"]["proj:bbox"][2]),
        min(pa["properties"]["proj:bbox"][3], by_id[pa["id"]]["properties"]["proj:bbox"][3]),
    )
    assert overlap[2] - overlap[0] >= 500 and overlap[3] - overlap[1] >= 500
    compared = 0
    for ia in a:
        ib = by_id[ia["id"]]
        for name, asset in ia["assets"].items():
            va = _window(asset["href"], overlap)
            vb = _window(ib["assets"][name]["href"], overlap)
            assert va.shape == vb.shape and va.size > 2500
            np.testing.assert_array_equal(va, vb, err_msg=f"{ia['id']} {name}")
            compared += 1
    assert compared >= 15
    # Something varies in the overlap (not a trivially constant comparison).
    assert np.ptp(_window(pa["assets"]["truth_B04"]["href"], overlap)) > 50


def test_revisit_lattices_do_not_depend_on_the_period():
    spec = SynthSpec()
    s1 = s1_dates(date(2023, 6, 1), date(2023, 7, 31), epsg=32721, spec=spec)
    assert [d.when.strftime("%m-%dT%H:%M") for d in s1] == [
        "06-07T09:15",
        "06-19T09:15",
        "07-01T09:15",
        "07-13T09:15",
        "07-25T09:15",
    ]
    later = s1_dates(date(2023, 7, 2), date(2023, 7, 31), epsg=32721, spec=spec)
    assert [d.when for d in later] == [d.when for d in s1[3:]]
    s2 = s2_dates(date(2023, 6, 30), date(2023, 7, 14), epsg=32721, spec=spec)
    assert [d.when.day for d in s2] == [3, 8, 13] and {d.when.hour for d in s2} == {14}
    both = SynthSpec(orbit_states=("descending", "ascending"), s1_revisit_days=6)
    s1b = s1_dates(date(2023, 7, 1), date(2023, 7, 12), epsg=32721, spec=both)
    assert [(d.when.day, d.orbit_state[0]) for d in s1b] == [
        (1, "d"),
        (6, "a"),
        (7, "d"),
        (12, "a"),
    ]


def test_bbox_errors():
    assert check_bbox([-55.1, -5.1, -54.9, -4.9]) == (-55.1, -5.1, -54.9, -4.9)
    with pytest.raises(Sar2OptError, match="bbox"):
        check_bbox([-54.0, -5.0, -55.0, -4.0])
    with pytest.raises(Sar2OptError, match="bbox"):
        check_bbox([-54.0, -85.0, -53.0, -4.0])
    with pytest.raises(Sar2OptError, match="band"):
        SynthSpec(s2_bands=("B99",))


def test_region_across_two_zones_and_dem_items(tmp_path):
    items = generate_region(
        tmp_path, [-54.006, -5.004, -53.996, -4.998], "2023-07-01", "2023-07-08"
    )
    assert sorted({it["properties"]["proj:epsg"] for it in items}) == [32721, 32722]
    ids = {it["id"] for it in items}
    assert "S1A_IW_SYNTH_20230701T091500_UTM21S" in ids
    assert "S2A_MSIL2A_SYNTH_20230708T140000_UTM22S" in ids
    dems = [it for it in items if it["collection"] == DEM_COLLECTION]
    assert len(dems) == 2 and len(items) == 2 * (1 + 1 + 2)
    for dem in dems:
        a = dem["assets"]["data"]
        assert set(dem["assets"]) == {"data"} and a["raster:bands"][0]["data_type"] == "float32"
        with rasterio.open(a["href"]) as src:
            assert src.dtypes[0] == "float32"
            assert list(src.transform)[:6] == dem["properties"]["proj:transform"]
            assert list(src.shape) == dem["properties"]["proj:shape"]
            z = src.read(1)
        assert 20.0 < z.min() and z.max() < 200.0  # Para lowland
    s1 = next(it for it in items if it["collection"] == "sentinel-1-rtc")
    assert {"vv", "vh", "layover", "shadow"} <= set(s1["assets"])
    assert (tmp_path / "items.parquet").is_file()


def test_cli_synth_writes_a_catalog_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["synth", "--bbox", "-55.003", "-5.003", "-54.997", "-4.997"]
    argv += ["--start", "2023-07-01", "--end", "2023-07-05", "--out", str(out), "--res-m", "20"]
    assert main(argv) == 0
    msg = capsys.readouterr().out
    assert "1 cop-dem-glo-30, 1 sentinel-1-rtc, 1 sentinel-2-l2a" in msg
    assert (out / "items.parquet").is_file()
    bad = ["synth", "--bbox", "-54", "-5", "-55", "-4", "--start", "2023-07-01"]
    assert main(bad + ["--end", "2023-07-05", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: bbox")
    ok_box = ["synth", "--bbox", "-55.003", "-5.003", "-54.997", "-4.997", "--start", "2023-07-09"]
    assert main(ok_box + ["--end", "2023-07-01", "--out", str(tmp_path / "y")]) == 2
