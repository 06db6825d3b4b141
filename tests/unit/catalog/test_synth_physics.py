"""Physics of the synthetic Earth, in numbers: backscatter, radar geometry, clouds and truth."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio

from sar2opt.catalog import radar
from sar2opt.catalog.clouds import shadow_offset_m, sun_angles
from sar2opt.catalog.synthetic import (
    FOREST,
    PASTURE,
    URBAN,
    WATER,
    SynthSpec,
    generate_scene,
    sar_tile,
    scene_grid,
    static_tile,
)
from sar2opt.catalog.terrain import TerrainSpec

JULY = datetime(2023, 7, 13, 9, 15, tzinfo=timezone.utc)


def _read(href) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(1)


def _db(lin: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(lin)))


# ---------------------------------------------------------------- radar geometry (pure functions)


def _ridge(slope_away_deg: float, slope_toward_deg: float, n: int = 400, res: float = 10.0):
    """One E-W row: flat, a ridge rising toward the east then dropping, flat (x = col * res).

    For a descending pass (radar east) the west flank faces away, the east flank faces the radar.
    """
    x = np.arange(n) * res
    top = 1000.0
    x0, x1 = 1000.0, 2000.0  # ridge from x0 (west foot) to x1 (crest), then down to x2
    x2 = x1 + top / math.tan(math.radians(slope_toward_deg))
    x0 = x1 - top / math.tan(math.radians(slope_away_deg))
    z = np.interp(x, [0, x0, x1, x2, x[-1]], [0, 0, top, 0, 0])
    return z[None, :].astype(np.float32), x


@pytest.mark.parametrize("inc", [30.0, 39.0, 45.0])
def test_shadow_only_where_slope_faces_away_beyond_90_minus_incidence(inc):
    # West flank facing away from an eastern radar, 5 deg steeper / gentler than 90 - inc.
    steep, _ = _ridge(90.0 - inc + 5.0, 10.0)
    gentle, _ = _ridge(90.0 - inc - 5.0, 10.0)
    sh_steep, _ = radar.shadow_layover(steep, 10.0, inc, +1)
    sh_gentle, _ = radar.shadow_layover(gentle, 10.0, inc, +1)
    assert sh_steep.sum() > 5 and sh_gentle.sum() == 0
    # The shadow lies on the west (away) side of the crest, nowhere else.
    crest = int(np.argmax(steep[0]))
    assert not sh_steep[0, crest:].any()
    # The same ridge seen from the west (ascending) casts its shadow on the east flank instead.
    sh_asc, _ = radar.shadow_layover(steep[:, ::-1], 10.0, inc, -1)
    np.testing.assert_array_equal(sh_asc[:, ::-1], sh_steep)


@pytest.mark.parametrize("inc", [30.0, 39.0])
def test_layover_only_where_slope_faces_radar_beyond_incidence(inc):
    steep, _ = _ridge(20.0, inc + 5.0)
    gentle, _ = _ridge(20.0, inc - 5.0)
    _, lay_steep = radar.shadow_layover(steep, 10.0, inc, +1)
    _, lay_gentle = radar.shadow_layover(gentle, 10.0, inc, +1)
    assert lay_steep.sum() > 5 and lay_gentle.sum() == 0
    crest = int(np.argmax(steep[0]))
    assert lay_steep[0, crest:].sum() > lay_steep[0, :crest].sum()  # mostly the facing flank


def test_local_incidence_and_shadow_length():
    # Flat ground: local incidence equals the ellipsoid incidence.
    c = radar.cos_local_incidence(np.zeros(1), np.zeros(1), 39.0, +1)
    assert c[0] == pytest.approx(math.cos(math.radians(39.0)), abs=1e-6)
    # A 20-deg slope facing an eastern radar (terrain falls toward the east): 39 - 20 = 19 deg.
    s = -math.tan(math.radians(20.0))
    c = radar.cos_local_incidence(np.array([s]), np.zeros(1), 39.0, +1)
    assert math.degrees(math.acos(c[0])) == pytest.approx(19.0, abs=1e-3)
    # A vertical 100 m step facing away casts a 100 * tan(39) = 81 m shadow (8 px at 10 m).
    z = np.zeros((1, 60), np.float32)
    z[0, 30:] = 100.0  # high ground east of x = 300 m, radar east: shadow west of the step
    sh, _ = radar.shadow_layover(z, 10.0, 39.0, +1)
    assert sh[0].sum() == math.floor(100 * math.tan(math.radians(39.0)) / 10.0)
    assert sh[0, 22:30].all() and not sh[0, :22].any()
    assert radar.geometry_halo_px(100.0, 10.0, 39.0) * 10.0 >= 100 * math.tan(math.radians(39.0))


# ---------------------------------------------------------------- backscatter on generated tiles


@pytest.fixture(scope="module")
def lowland():
    spec = SynthSpec(seed=3)
    grid = scene_grid(size_km=5.12, res_m=20.0)
    spec = SynthSpec(seed=3, res_m=20.0)
    st = static_tile(grid, 0, 0, grid.height, grid.width, spec)
    vv, vh, lc = sar_tile(st, JULY, "descending", spec)
    return st, vv, vh, lc


def test_water_darker_than_forest_in_vv_by_the_chosen_margin(lowland):
    _, vv, vh, lc = lowland
    assert (lc == WATER).sum() > 100 and (lc == FOREST).sum() > 1000
    margin = radar.SIGMA0_DB[FOREST][0] - radar.SIGMA0_DB[WATER][0]  # 13 dB
    measured = _db(vv[lc == FOREST]) - _db(vv[lc == WATER])
    assert measured == pytest.approx(margin, abs=1.5)
    vh_margin = _db(vh[lc == FOREST]) - _db(vh[lc == WATER])
    assert vh_margin > 10.0
    # Forest VH above pasture VH (volume scattering), speckle has the chosen ENL.
    assert _db(vh[lc == FOREST]) > _db(vh[lc == PASTURE]) + 3.0


def test_speckle_has_the_chosen_looks(lowland):
    st, vv, _, lc = lowland
    # On flat forest the mean-normalised intensity of a 4x4 block varies by speckle mostly;
    # the ratio of pixel variance to squared mean within blocks estimates 1/ENL.
    f = (lc == FOREST) & (np.abs(st.layout.biomass) < 3)
    k = 4
    h, w = (s // k * k for s in vv.shape)
    blocks = vv[:h, :w].reshape(h // k, k, w // k, k)
    pure = f[:h, :w].reshape(h // k, k, w // k, k).all(axis=(1, 3))
    b = blocks.transpose(0, 2, 1, 3).reshape(h // k, w // k, -1)[pure]
    enl = 1.0 / np.median(b.var(axis=1, ddof=1) / b.mean(axis=1) ** 2)
    assert enl == pytest.approx(radar.ENL, rel=0.3)


def test_urban_brightest_in_vv():
    spec = SynthSpec(seed=0, res_m=40.0)
    # A 20 km square holds several highway crossings; some have towns.
    grid = scene_grid(size_km=20.48, res_m=40.0)
    st = static_tile(grid, 0, 0, grid.height, grid.width, spec)
    vv, _, lc = sar_tile(st, JULY, "descending", spec)
    assert (lc == URBAN).sum() > 20
    assert _db(vv[lc == URBAN]) > _db(vv[lc == FOREST]) + 3.0


@pytest.fixture(scope="module")
def mountains():
    spec = SynthSpec(seed=5, res_m=20.0, terrain=TerrainSpec(relief_m=2000.0))
    grid = scene_grid(size_km=6.4, res_m=20.0)
    st = static_tile(grid, 0, 0, grid.height, grid.width, spec)
    vv, vh, lc = sar_tile(st, JULY, "descending", spec)
    return st, vv, vh, lc


def test_mountains_have_shadow_on_slopes_facing_away_and_layover_facing(mountains):
    st, vv, _, _ = mountains
    cos_loc, shadow, layover = st.geometry["descending"]
    dem = st.dem_m
    assert np.ptp(dem) > 800
    assert 0.001 < shadow.mean() < 0.4 and 0.001 < layover.mean() < 0.6
    assert not (shadow & layover).any()
    # Every facet turned away from the beam is in shadow (the mask also holds cast shadow).
    assert (cos_loc <= 0).sum() > 50 and shadow[cos_loc <= 0].mean() > 0.95
    dz_dx = np.gradient(dem, 20.0, axis=1)
    # Radar to the east: shadowed ground mostly rises eastward (faces away); every facet falling
    # eastward (facing the radar) steeper than the incidence angle is in layover.
    assert np.median(dz_dx[shadow]) > 0.5
    facing_steep = (-dz_dx > math.tan(math.radians(39.0)) + 0.1) & (
        np.abs(np.gradient(dem, 20.0, axis=0)) < 0.2
    )
    assert facing_steep.sum() > 50 and layover[facing_steep].mean() > 0.95
    # Shadow reads the noise floor; slopes facing the radar are brighter than those facing away.
    assert _db(vv[shadow]) == pytest.approx(radar.NOISE_FLOOR_DB[0], abs=1.0)
    ok = ~shadow & ~layover
    facing = ok & (cos_loc > math.cos(math.radians(39.0)) + 0.1)
    away = ok & (cos_loc < math.cos(math.radians(39.0)) - 0.2)
    assert _db(vv[facing]) > _db(vv[away]) + 1.0


# ---------------------------------------------------------------- clouds, SCL and truth on disk


def test_sun_angles_and_shadow_direction():
    zen, _ = sun_angles(0.0, 0.0, datetime(2023, 3, 20, 12, 7, tzinfo=timezone.utc))
    assert zen < 1.0  # equinox noon on the equator
    zen, az = sun_angles(0.0, 23.44, datetime(2023, 6, 21, 12, 2, tzinfo=timezone.utc))
    assert zen < 1.0
    # Para, July, 10:20 local solar time: sun in the north-east, ~39 deg from the zenith.
    zen, az = sun_angles(-57.0, -5.0, datetime(2023, 7, 8, 14, 0, tzinfo=timezone.utc))
    assert zen == pytest.approx(39.0, abs=2.0) and 30 < az < 60
    dx, dy = shadow_offset_m(zen, az, 1500.0)
    assert (
        dx > 0
        and dy > 0
        and math.hypot(dx, dy) == pytest.approx(1500 * math.tan(math.radians(zen)))
    )


@pytest.fixture(scope="module")
def cloudy_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("cloudy")
    spec = SynthSpec(s2_bands=("B02", "B03", "B04", "B08", "B11"), qa60_reliable=True)
    items = generate_scene(out, seed=4, size_km=2.56, n_s1=1, n_s2=2, spec=spec)
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    return s2[1]  # target cover 55 %


def test_scl_flags_clouds_and_truth_equals_image_elsewhere(cloudy_scene):
    it = cloudy_scene
    scl = _read(it["assets"]["SCL"]["href"])
    cloud = np.isin(scl, (8, 9))
    assert 0.1 < cloud.mean() < 0.95
    flagged = np.isin(scl, (3, 8, 9, 10))
    for band in ("B02", "B04", "B08", "B11"):
        img = _read(it["assets"][band]["href"])
        truth = _read(it["assets"][f"truth_{band}"]["href"])
        # Outside clouds and shadows the truth IS the image; under clouds it differs.
        np.testing.assert_array_equal(img[~flagged], truth[~flagged])
        assert np.mean(img[scl == 9] != truth[scl == 9]) > 0.99
    b02 = _read(it["assets"]["B02"]["href"]) / 1e4
    assert b02[scl == 9].mean() > 0.3 > 4 * b02[np.isin(scl, (4, 5))].mean()
    # A reliable QA60 (asked for here) sets the opaque bit exactly on high-probability clouds.
    qa = _read(it["assets"]["QA60"]["href"])
    np.testing.assert_array_equal((qa & (1 << 10)) > 0, scl == 9)
    assert it["properties"]["eo:cloud_cover"] == pytest.approx(100 * cloud.mean(), abs=0.01)
