"""``sar2opt export cog``: COGs (tiled, overviews, lossless, nodata, the store's grid) and STAC
items that odc-stac and stackstac load back to exactly the store's pixels; bad input is one
``error:`` line and exit 2, with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr

import sar2opt.infer.store as store
from sar2opt.cli import main
from sar2opt.grid import GridSpec

T = ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z"]
# 3 x 4 blocks of 256 px, clipped at the edges; bigger than a COG tile, so overviews exist
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * 900, 9_400_000.0 + 10 * 700))
BANDS = ["B04", "B08"]
BLOCK = 256


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    path = store.create_store(tmp / "m.zarr", GRID, T, BANDS, {}, BLOCK, 2)
    rng = np.random.default_rng(0)
    h, w = GRID.shape
    blocks = []
    for t in (0, 1):
        for r0 in range(0, h, BLOCK):
            for c0 in range(0, w, BLOCK):
                if t == 1 and (r0, c0) == (0, 0):
                    continue  # a block with no data: stays nodata in the COG
                r1, c1 = min(r0 + BLOCK, h), min(c0 + BLOCK, w)
                opt = rng.uniform(0, 0.4, (2, r1 - r0, c1 - c0)).astype(np.float32)
                opt[:, :5, :7] = np.nan  # no data inside a written block
                src = rng.integers(1, 3, opt.shape[1:]).astype(np.uint8)
                src[:5, :7] = 0
                blocks.append((t, (r0, c0, r1, c1), opt, src, opt[1] / 7))
    store.write_blocks(path, blocks)
    out = tmp / "cogs"
    assert main(["export", "cog", str(path), "--out", str(out)]) == 0
    return path, out


def _items(out):
    coll = pystac.Collection.from_file(str(out / "collection.json"))
    items = sorted(coll.get_items(), key=lambda it: it.datetime)
    for it in items:
        it.make_asset_hrefs_absolute()
    return items


def test_the_cogs_are_cloud_optimized_lossless_and_on_the_store_grid(exported) -> None:
    path, out = exported
    ds = xr.open_zarr(path, consolidated=False)
    folder = out / "m-20230713T091500"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["B04.tif", "B08.tif", "source.tif", "uncertainty.tif", "m-20230713T091500.json"]
    )
    for name, want, dtype, nodata in [
        ("B08", ds.optical[1, 1], "float32", None),
        ("source", ds.source[1], "uint8", 0),
        ("uncertainty", ds.uncertainty[1], "float32", None),
    ]:
        with rasterio.open(folder / f"{name}.tif") as f:
            assert f.driver == "GTiff" and f.count == 1 and f.dtypes[0] == dtype
            assert f.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert f.profile["tiled"] and f.block_shapes[0] == (512, 512)
            assert f.overviews(1) == [2], f.overviews(1)  # 900 x 700 px: one level
            assert f.compression.name == "deflate"
            assert f.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == ("3" if dtype != "uint8" else "2")
            assert np.isnan(f.nodata) if nodata is None else f.nodata == nodata
            assert f.crs.to_epsg() == 32721 and f.transform == GRID.transform
            np.testing.assert_array_equal(f.read(1), want.values)  # lossless, NaN in place
    assert np.isnan(ds.optical[1, :, :BLOCK, :BLOCK].values).all()  # the unwritten block


def test_odc_stac_and_stackstac_load_the_items_to_the_store_pixels(exported) -> None:
    import odc.stac
    import stackstac

    path, out = exported
    ds = xr.open_zarr(path, consolidated=False)
    items = _items(out)
    assert [it.properties["sar2opt:time_index"] for it in items] == [0, 1]
    it = items[0]
    assert it.properties["proj:code"] == "EPSG:32721" and it.properties["proj:shape"] == [700, 900]
    assert it.properties["proj:transform"] == list(GRID.transform)[:6]
    assert it.properties["proj:bbox"] == list(GRID.bounds)
    assert it.assets["B04"].extra_fields["eo:bands"][0]["common_name"] == "red"
    assert it.assets["source"].extra_fields["raster:bands"][0]["nodata"] == 0
    names = [*BANDS, "source", "uncertainty"]
    odc = odc.stac.load(items, bands=names, chunks={})
    assert odc.odc.geobox.crs.epsg == 32721
    np.testing.assert_array_equal(odc.x.values, ds.x.values)
    np.testing.assert_array_equal(odc.y.values, ds.y.values)
    for i, b in enumerate(BANDS):
        np.testing.assert_array_equal(odc[b].values, ds.optical[:, i].values)
    np.testing.assert_array_equal(odc["source"].values, ds.source.values)
    np.testing.assert_array_equal(odc["uncertainty"].values, ds.uncertainty.values)
    # stackstac 0.5 reads the CRS from proj:epsg only, which pystac drops on reading
    # projection v2 items: the grid is given (what the README shows)
    stack = stackstac.stack(
        items, assets=names, epsg=GRID.epsg, bounds=GRID.bounds, resolution=GRID.res_m,
        snap_bounds=False, xy_coords="center", chunksize=512, dtype="float32",
        fill_value=np.float32(np.nan), rescale=False,
    )  # fmt: skip
    np.testing.assert_array_equal(stack.x.values, ds.x.values)
    np.testing.assert_array_equal(stack.y.values, ds.y.values)
    np.testing.assert_array_equal(stack.sel(band=BANDS).values, ds.optical.values)
    np.testing.assert_array_equal(stack.sel(band="uncertainty").values, ds.uncertainty.values)


def test_one_time_step_by_date_and_bad_input_is_one_error_line(tmp_path, exported, capsys):
    path, _ = exported
    out = tmp_path / "one"
    assert main(["export", "cog", str(path), "--out", str(out), "--time", "2023-07-13"]) == 0
    (item,) = json.loads((out / "collection.json").read_text())["links"][1:]
    assert item["href"] == "m-20230713T091500/m-20230713T091500.json"
    capsys.readouterr()
    for args, msg in [
        ([str(tmp_path / "nope.zarr")], "holds no mosaic store"),
        ([str(path), "--time", "2023-07-02"], "is not a time step of the store"),
        ([str(path), "--time", "July"], "is not a date or time"),
    ]:
        bad = tmp_path / "bad"
        assert main(["export", "cog", *args, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
        assert not bad.exists()
