"""COG writer: georeferencing, values and nodata survive the round trip."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sar2opt.catalog.cog import write_cog
from sar2opt.grid import GridSpec


@pytest.fixture
def grid() -> GridSpec:
    return GridSpec(32721, 10.0, (700000.0, 9500000.0, 700640.0, 9500480.0))  # 48 x 64 px


def test_float_roundtrip_crs_transform_values_nodata(tmp_path, grid):
    rng = np.random.default_rng(1)
    arr = rng.random(grid.shape).astype(np.float32)
    arr[3, 5] = np.nan
    path = write_cog(tmp_path / "a.tif", arr, grid, -32768.0, "float32")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32721
        assert src.transform == grid.transform
        assert (src.height, src.width) == grid.shape
        assert src.nodata == -32768.0
        assert src.dtypes[0] == "float32"
        assert src.profile["compress"] == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        out = src.read(1)
        masked = src.read(1, masked=True)
    assert out[3, 5] == -32768.0  # NaN became the declared nodata
    assert masked.mask[3, 5] and masked.mask.sum() == 1
    good = ~np.isnan(arr)
    np.testing.assert_array_equal(out[good], arr[good])


def test_multiband_uint16_and_tiling(tmp_path):
    grid = GridSpec(32721, 10.0, (700000.0, 9500000.0, 705120.0, 9505120.0))  # 512 x 512
    arr = np.arange(2 * 512 * 512, dtype=np.uint32).reshape(2, 512, 512) % 60000
    path = write_cog(tmp_path / "b.tif", arr, grid, 0, "uint16")
    with rasterio.open(path) as src:
        assert src.count == 2
        assert src.block_shapes[0] == (256, 256)
        assert src.overviews(1)  # 512 px -> at least one internal overview
        np.testing.assert_array_equal(src.read(), arr.astype(np.uint16))


def test_shape_mismatch_is_refused(tmp_path, grid):
    with pytest.raises(ValueError, match="does not match"):
        write_cog(tmp_path / "c.tif", np.zeros((10, 10), np.float32), grid, None, "float32")
