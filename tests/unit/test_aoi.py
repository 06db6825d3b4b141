"""AOI files: GeoJSON variants, the real Amazon outline, one-line errors for bad input."""

import json

import pytest

from sar2opt.aoi import grid_for_aoi, load_aoi
from sar2opt.errors import AOIError


def _write(tmp_path, obj, name="a.geojson"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


SQUARE = {
    "type": "Polygon",
    "coordinates": [[[-55.2, -4.4], [-55.1, -4.4], [-55.1, -4.3], [-55.2, -4.3], [-55.2, -4.4]]],
}


def test_load_aoi_variants(tmp_path):
    g1 = load_aoi(_write(tmp_path, SQUARE))
    g2 = load_aoi(
        _write(tmp_path, {"type": "Feature", "properties": {}, "geometry": SQUARE}, "b.json")
    )
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": SQUARE}]}
    g3 = load_aoi(_write(tmp_path, fc, "c.json"))
    assert g1.equals(g2) and g1.equals(g3)
    grid = grid_for_aoi(g1, 10.0)
    assert grid.epsg == 32721 and grid.width == pytest.approx(1113, abs=3)


def test_real_amazon_outline_is_one_valid_polygon():
    from tests.helpers.data import SHARED_DATA

    path = SHARED_DATA / "aoi" / "amazon.geojson"
    if not path.exists():
        pytest.skip("shared data missing")
    aoi = load_aoi(path)
    w, s, e, n = aoi.bounds
    assert -74.5 < w < -73.5 and -44 < e < -43 and -17 < s < -16 and 5 < n < 5.5


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Point", "coordinates": [1, 2]}', "Polygon or MultiPolygon"),
        ('{"type": "FeatureCollection", "features": []}', "no geometry"),
        ('{"foo": 1}', "not a GeoJSON"),
        (
            json.dumps(
                {"type": "Polygon", "coordinates": [[[0, 0], [1e6, 0], [1e6, 1e6], [0, 0]]]}
            ),
            "lon/lat",
        ),
    ],
)
def test_load_aoi_rejects_bad_input(tmp_path, content, match):
    with pytest.raises(AOIError, match=match):
        load_aoi(_write(tmp_path, content))


def test_load_aoi_missing_file(tmp_path):
    with pytest.raises(AOIError, match="not found"):
        load_aoi(tmp_path / "nope.geojson")
