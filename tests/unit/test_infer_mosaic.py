"""write_mosaic: Zarr v3 round trip with CRS, coords and provenance; atomic and no clobber."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.infer import mosaic as mosaic_mod
from sar2opt.infer.mosaic import MOSAIC_VAR, sha256_file, write_mosaic

GRID = GridSpec(32633, 10.0, (500_000.0, 4_000_000.0, 503_000.0, 4_002_000.0))  # 200 x 300
TIMES = ["2023-07-03T05:43:12.123456Z", "2023-07-15T05:43:14+00:00"]
BANDS = ["B02", "B03", "B04", "B08"]
ATTRS = {
    "model": {"generator": "unet", "ngf": 16},
    "checkpoint": "/ckpt",
    "checkpoint_sha256": "ab" * 32,
    "config": {"infer": {"tile_px": 128, "overlap_px": 32}},
    "s1_item_ids": [["S1A_a", "S1A_b"], ["S1A_c"]],
    "git_sha": "deadbeef",
}


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 0.3, (2, 4, *GRID.shape)).astype(np.float32)
    d[1, :, :10, :10] = np.nan
    return d


def test_round_trip(tmp_path) -> None:
    data = _data()
    path = write_mosaic(tmp_path / "m.zarr", data, GRID, TIMES, BANDS, ATTRS, tile_px=128)
    assert path == tmp_path / "m.zarr"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]  # no temp left
    ds = xr.open_zarr(path)
    da = ds[MOSAIC_VAR]
    assert da.dims == ("time", "band", "y", "x")
    assert da.shape == (2, 4, 200, 300) and da.dtype == np.float32
    np.testing.assert_array_equal(da.values, data)  # NaN compare equal here
    np.testing.assert_array_equal(ds.x.values, GRID.xs())
    np.testing.assert_array_equal(ds.y.values, GRID.ys())
    assert list(ds.band.values) == BANDS
    assert str(ds.time.values[0]).startswith("2023-07-03T05:43:12.123456")
    assert da.rio.crs.to_epsg() == 32633 and ds.rio.crs.to_epsg() == 32633
    assert tuple(da.rio.transform())[:6] == tuple(GRID.transform)[:6]
    assert da.encoding["chunks"] == (1, 4, 128, 128)
    for k, v in ATTRS.items():
        assert ds.attrs[k] == v
    assert ds.attrs["grid"] == GRID.to_dict()
    assert ds.attrs["times_iso"] == TIMES


def test_refuses_to_overwrite_unless_asked(tmp_path) -> None:
    path = tmp_path / "m.zarr"
    write_mosaic(path, _data(), GRID, TIMES, BANDS, ATTRS)
    with pytest.raises(Sar2OptError, match="exists"):
        write_mosaic(path, _data() * 0, GRID, TIMES, BANDS, ATTRS)
    assert float(xr.open_zarr(path)[MOSAIC_VAR].max()) > 0  # untouched
    write_mosaic(path, np.zeros_like(_data()), GRID, TIMES, BANDS, ATTRS, overwrite=True)
    assert float(xr.open_zarr(path)[MOSAIC_VAR].max()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


class _Boom(RuntimeError):
    pass


def test_failed_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    real = xr.Dataset.to_zarr

    def half_then_fail(self, store, *a, **kw):
        real(self, store, *a, **kw)  # the temp store is complete on disk ...
        raise _Boom("disk full")  # ... then the run dies

    monkeypatch.setattr(xr.Dataset, "to_zarr", half_then_fail)
    path = tmp_path / "m.zarr"
    with pytest.raises(_Boom):
        write_mosaic(path, _data(), GRID, TIMES, BANDS, ATTRS)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_previous_mosaic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.zarr"
    write_mosaic(path, _data(), GRID, TIMES, BANDS, ATTRS)
    real_replace = mosaic_mod.os.replace
    calls = []

    def replace_fail_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old moved aside, new one fails to move in
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(mosaic_mod.os, "replace", replace_fail_second)
    with pytest.raises(OSError):
        write_mosaic(path, np.zeros_like(_data()), GRID, TIMES, BANDS, ATTRS, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]
    assert float(xr.open_zarr(path)[MOSAIC_VAR].max()) > 0  # previous mosaic restored


def test_rejects_wrong_shape(tmp_path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_mosaic(tmp_path / "m.zarr", _data()[:, :3], GRID, TIMES, BANDS, ATTRS)
    assert list(tmp_path.iterdir()) == []


def test_sha256_file(tmp_path) -> None:
    p = tmp_path / "model.pt"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
