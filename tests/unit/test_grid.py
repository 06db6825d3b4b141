"""GridSpec: shape, transform, coordinates, snapping, UTM zones."""

import pytest

from sar2opt.grid import GridSpec, grid_for_lonlat_bounds, lonlat_bounds, utm_epsg


def test_grid_shape_transform_and_coords():
    g = GridSpec(32721, 10.0, (700000, 9500000, 702560, 9501280))
    assert g.shape == (128, 256)
    assert g.transform.c == 700000 and g.transform.f == 9501280 and g.transform.e == -10
    assert g.xs()[0] == 700005 and g.ys()[0] == 9501275 and len(g.ys()) == 128
    sub = g.subgrid(64, 128, 64, 128)
    assert sub.bounds == (701280, 9500000, 702560, 9500640)
    assert GridSpec.from_dict(g.to_dict()) == g


def test_grid_rejects_off_lattice_and_empty():
    with pytest.raises(ValueError, match="lattice"):
        GridSpec(32721, 10.0, (700003, 9500000, 702560, 9501280))
    with pytest.raises(ValueError, match="empty"):
        GridSpec(32721, 10.0, (700000, 9500000, 700000, 9501280))


def test_covering_snaps_outwards():
    g = GridSpec.covering(32721, 10.0, (700001.5, 9500009, 700019, 9500021))
    assert g.bounds == (700000, 9500000, 700020, 9500030)


def test_utm_zone_and_lonlat_round_trip():
    assert utm_epsg(-55.2, -4.39) == 32721
    assert utm_epsg(-73.9, 4.0) == 32618
    g = grid_for_lonlat_bounds((-55.25, -4.44, -55.15, -4.34), 10.0)
    assert g.epsg == 32721
    w, s, e, n = lonlat_bounds(g)
    assert w <= -55.25 and e >= -55.15 and s <= -4.44 and n >= -4.34
    assert abs(w + 55.25) < 0.001 and abs(n + 4.34) < 0.001
    assert 1100 < g.width < 1120
