"""The STAC documents beside a store, read by real clients: pystac reads the collection and
its items (datacube, projection and xarray-assets fields), xpystac opens the store from the
collection's asset and from an item's, to the values xarray reads from the store itself."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest
import xarray as xr
from pystac.extensions.datacube import DatacubeExtension
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import box

import sar2opt.infer.store as store
from sar2opt.grid import GridSpec
from sar2opt.infer.publish import COLLECTION, publish_store

T = ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z", "2023-07-25T09:15:00Z"]
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * 70, 9_400_000.0 + 10 * 50))
BANDS = ["B02", "B03", "B04", "B08"]
AOI = box(-50.0, -5.0, -49.99, -4.99)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    path = tmp_path_factory.mktemp("pub") / "m.zarr"
    store.create_store(path, GRID, T, BANDS, {store.S1_IDS_ATTR: [["a"], ["b"], ["c"]]}, 32, 2)
    rng = np.random.default_rng(0)
    blocks = []
    for t in (0, 2):  # time step 1 stays unwritten: NaN / source 0
        for core in [(0, 0, 32, 64), (0, 64, 32, 70), (32, 0, 50, 64), (32, 64, 50, 70)]:
            h, w = core[2] - core[0], core[3] - core[1]
            opt = rng.random((4, h, w), np.float32)
            blocks.append((t, core, opt, rng.integers(1, 3, (h, w)), opt[0] / 10))
    store.write_blocks(path, blocks)
    items = publish_store(path, AOI)
    return path, items


def test_pystac_reads_the_collection_with_cube_and_its_items_with_projection(published) -> None:
    path, written = published
    coll = pystac.Collection.from_file(str(path / store.STAC_DIR / "collection.json"))
    assert coll.id == COLLECTION and len(written) == 3
    cube = DatacubeExtension.ext(coll)
    dims = cube.dimensions
    assert list(dims) == ["time", "band", "y", "x"]
    assert dims["band"].to_dict()["values"] == BANDS
    assert dims["time"].to_dict()["values"] == T
    x, y = dims["x"], dims["y"]
    assert x.reference_system == y.reference_system == 32721
    assert x.extent == [GRID.xs()[0], GRID.xs()[-1]] and x.step == 10.0
    assert y.extent == [GRID.ys()[-1], GRID.ys()[0]] and y.step == -10.0
    variables = cube.variables
    assert set(variables) == set(store.VARS)
    assert variables["optical"].dimensions == ["time", "band", "y", "x"]
    assert variables["source"].dimensions == ["time", "y", "x"]
    asset = coll.assets["zarr"]
    assert asset.extra_fields["xarray:open_kwargs"]["consolidated"] is False
    assert asset.get_absolute_href() == str(path)
    items = sorted(coll.get_items(), key=lambda it: it.datetime)
    assert [it.properties["sar2opt:time_index"] for it in items] == [0, 1, 2]
    for it in items:
        proj = ProjectionExtension.ext(it)
        assert proj.code == "EPSG:32721" and proj.epsg == 32721
        assert proj.shape == [50, 70]
        assert proj.transform == list(GRID.transform)[:6]
        assert proj.bbox == list(GRID.bounds)
        assert it.assets["zarr"].get_absolute_href() == str(path)
        assert it.get_collection().id == COLLECTION
    # the written files carry the extension schemas they use
    doc = json.loads((path / store.STAC_DIR / "collection.json").read_text())
    assert any("datacube" in e for e in doc["stac_extensions"])
    assert any("xarray-assets" in e for e in doc["stac_extensions"])


def test_xpystac_opens_the_store_from_the_collection_and_an_item(published) -> None:
    pytest.importorskip("xpystac")  # registers engine="stac"
    path, _ = published
    want = xr.open_zarr(path, consolidated=False)
    coll = pystac.Collection.from_file(str(path / store.STAC_DIR / "collection.json"))
    coll.make_asset_hrefs_absolute()  # relative in the files (the store can move)
    item = next(it for it in coll.get_items() if it.properties["sar2opt:time_index"] == 2)
    item.make_asset_hrefs_absolute()
    for asset in (coll.assets["zarr"], item.assets["zarr"]):
        got = xr.open_dataset(asset, engine="stac")
        assert set(got.data_vars) == set(store.VARS)
        assert list(got.band.values) == BANDS
        for name in store.VARS:
            np.testing.assert_array_equal(got[name].values, want[name].values)
        assert got.rio.crs.to_epsg() == 32721
    t = item.properties["sar2opt:time_index"]
    assert np.isfinite(got["optical"][t].values).all()  # the item's slice is written
    np.testing.assert_array_equal(got.time.values, want.time.values)
