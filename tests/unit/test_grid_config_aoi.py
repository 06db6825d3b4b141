import dataclasses
import json

import numpy as np
import pytest

from sar2opt.aoi import grid_for_aoi, load_aoi
from sar2opt.config import Config, config_from_dict, config_to_dict, load_config
from sar2opt.errors import AOIError, ConfigError
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


def test_config_defaults_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 3\ncatalog:\n  opt_bands: [B02, B03, B04]\n")
    cfg = load_config(p, ["train.lr=0.001", "cube.epsg=32721"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001 and cfg.cube.epsg == 32721
    assert cfg.catalog.opt_bands == ("B02", "B03", "B04")
    assert config_to_dict(cfg)["catalog"]["opt_bands"] == ["B02", "B03", "B04"]
    with pytest.raises(ConfigError, match="unknown key.*epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown key.*trian"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 5  # type: ignore[misc]


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


def test_config_float_fields_accept_ints():
    cfg = load_config(None, ["cube.max_dt_days=3"])
    assert cfg.cube.max_dt_days == 3.0 and isinstance(cfg.cube.max_dt_days, float)
    assert np.isclose(cfg.cube.res_m, 10.0)


def test_retired_key_is_dropped_from_saved_configs_and_explained_in_new_ones():
    # checkpoints written before infer.inflight_mb was removed still load
    saved = config_to_dict(Config())
    saved["infer"]["inflight_mb"] = 256.0
    assert config_from_dict(saved, saved=True) == Config()
    with pytest.raises(ConfigError, match="infer.inflight_mb was removed: .*calls_per_actor"):
        load_config(None, ["infer.inflight_mb=256"])
