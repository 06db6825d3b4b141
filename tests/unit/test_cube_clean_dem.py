"""DEM slope/aspect, normalisation and radar-geometry masks, on planes whose answers are known."""

import numpy as np
import pytest

from sar2opt.cube import clean_dem


def _plane(slope_deg, aspect_deg, n=9, res_m=30.0):
    """A tilted plane whose downhill direction is ``aspect_deg`` (clockwise from north)."""
    g = np.tan(np.radians(slope_deg))
    rows, cols = np.mgrid[0:n, 0:n]
    north_m, east_m = -rows * res_m, cols * res_m
    a = np.radians(aspect_deg)
    return 500.0 - g * (north_m * np.cos(a) + east_m * np.sin(a))


def test_slope_and_aspect_of_planes():
    for aspect in (0.0, 90.0, 225.0):
        s, a = clean_dem.slope_aspect(_plane(20.0, aspect), 30.0)
        np.testing.assert_allclose(s, 20.0, atol=1e-4)
        np.testing.assert_allclose(a, aspect, atol=1e-3)


def test_normalise_by_max():
    dem = np.array([[0.0, 50.0], [100.0, np.nan]])
    out = clean_dem.normalise_by_max(dem)
    assert out[1, 0] == 1.0 and out[0, 1] == 0.5 and np.isnan(out[1, 1])
    with pytest.raises(ValueError):
        clean_dem.normalise_by_max(np.zeros((2, 2)))


@pytest.mark.parametrize(
    "slope,aspect,expect",
    [
        (50.0, 270.0, "layover"),  # radar looks east (90): slope faces west, steeper than 35
        (20.0, 270.0, "foreshortening"),
        (60.0, 90.0, "shadow"),  # faces away, steeper than 90 - 35
        (40.0, 90.0, None),  # faces away but the beam still reaches it
        (50.0, 0.0, None),  # faces north: no range component
    ],
)
def test_radar_geometry_masks(slope, aspect, expect):
    m = clean_dem.radar_geometry_masks(_plane(slope, aspect), 30.0, 35.0, 90.0)
    for k in ("layover", "foreshortening", "shadow"):
        assert m[k][4, 4] == (k == expect), (k, m["local_incidence_deg"][4, 4])
