"""The mosaic store is plain Zarr v3: written without a warning (no unspecified data type, no
consolidated metadata), opened by xarray without one, and read by a second, independent
implementation (tensorstore) to the same values."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings

import numpy as np
import pytest
import tensorstore as ts
import xarray as xr
import zarr
from shapely.geometry import box

import sar2opt.infer.store as store
from sar2opt.grid import GridSpec
from sar2opt.infer.ledger import TileLedger
from sar2opt.infer.publish import publish_store

T = ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z"]
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * 70, 9_400_000.0 + 10 * 50))
BANDS = ["B02", "B03", "B04", "B08"]
CORES = [(0, 0, 32, 64), (0, 64, 32, 70), (32, 0, 50, 64), (32, 64, 50, 70)]  # 2-block shards
PIPELINES = ["zarr"] + (["zarrs"] if importlib.util.find_spec("zarrs") else [])
#: Data types of the Zarr v3 core spec, plus ``string`` (registered in zarr-extensions).
V3_TYPES = {"bool", "float16", "float32", "float64", "complex64", "complex128", "string"} | {
    f"{s}int{n}" for s in ("", "u") for n in (8, 16, 32, 64)
}


def _blocks(seed: int, times=(0, 1)) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for t in times:
        for core in CORES:
            h, w = core[2] - core[0], core[3] - core[1]
            opt = rng.random((len(BANDS), h, w), np.float32)
            opt[:, :3, :3] = np.nan  # no data inside a block
            obs = rng.integers(300_000_000, 310_000_000, (h, w)).astype(np.int32)
            obs[:3, :3] = store.OBS_TIME_FILL  # no observation where there is no data
            src = rng.integers(0, 4, (h, w))
            out.append((t, core, opt, src, rng.random((h, w), np.float32), obs))
    return out


def _finished_store(tmp_path, pipeline: str = "zarr"):
    """A store through everything a run and a monitor do to it: create, write, ledger,
    publish, append a time step and fill it, update attrs."""
    cfg = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"} if pipeline == "zarrs" else {}
    with zarr.config.set(cfg):
        path = store.create_store(tmp_path / "m.zarr", GRID, T, BANDS, {"zone": "21M"}, 32, 2)
        store.write_blocks(path, _blocks(0))
        TileLedger(path).record([(T[0], 0, 0), (T[0], 0, 1)])
        publish_store(path, box(-50.0, -5.0, -49.9, -4.9))
        assert store.append_times(path, ["2023-07-25T09:15:00Z"]) == [2]
        store.write_blocks(path, _blocks(1, times=(2,)))
        store.update_attrs(path, {store.COMPLETE_ATTR: True})
    return path


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_store_is_written_and_opened_without_any_warning(tmp_path, pipeline) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (unspecified dtype, consolidated) fails
        path = _finished_store(tmp_path, pipeline)
        ds = xr.open_zarr(path, consolidated=False)  # lists the root: stac/, _sar2opt/ too
        assert sorted(ds.data_vars) == sorted(store.VARS) and list(ds.band.values) == BANDS
        assert ds.sel(band="B04")["optical"].shape == (3, 50, 70)  # labels, as before
        members = dict(zarr.open_group(str(path), mode="r", use_consolidated=False).members())
        assert {"stac", store.SIDECAR_DIR} <= set(members)  # groups, not unknown objects
    root = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" not in root
    types = {
        json.loads(p.read_text()).get("data_type")
        for p in path.glob("*/zarr.json")
        if json.loads(p.read_text())["node_type"] == "array"
    }
    assert types <= V3_TYPES and "string" in types, types  # band names: v3 ``string``
    assert (path / store.LEDGER_FILE).read_text().splitlines()[0] == f"{T[0]} 0 0"
    assert (path / store.STAC_DIR / "collection.json").is_file()


def test_tensorstore_reads_the_same_values_as_xarray(tmp_path) -> None:
    path = _finished_store(tmp_path)
    ds = xr.open_zarr(path, consolidated=False)
    for name in (*store.VARS, "time", "y", "x"):
        arr = ts.open({"driver": "zarr3", "kvstore": f"file://{path / name}"}).result()
        got = arr.read().result()
        want = ds[name].values
        if name in ("time", store.OBS_TIME_VAR):  # CF offsets from the ``units`` epoch
            a = json.loads((path / name / "zarr.json").read_text())["attributes"]
            got = np.where(got == a.get("_FillValue", np.nan), np.nan, got)  # -1: none
            got = xr.coding.times.decode_cf_datetime(got, a["units"], a.get("calendar"))
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert arr.domain.labels == tuple(ds[name].dims)
    assert np.isnan(ds["optical"].values).any() and np.isfinite(ds["optical"].values).any()
    obs = ds[store.OBS_TIME_VAR].values
    assert np.isnat(obs).any() and (obs[~np.isnat(obs)] > np.datetime64("2023-07-01")).all()
    # readers without the ``string`` type find the band names on ``optical`` itself
    meta = json.loads((path / store.OPTICAL_VAR / "zarr.json").read_text())
    assert meta["attributes"][store.BAND_NAMES_ATTR] == BANDS


def test_a_store_from_before_loses_its_consolidated_metadata_and_keeps_its_ledger(
    tmp_path,
) -> None:
    """Stores written by the previous version: consolidated metadata (which would go stale
    once attrs or shapes change) is dropped on the next update; the root ledger moves."""
    path = store.create_store(tmp_path / "m.zarr", GRID, T, BANDS, {}, 32, 2)
    store.write_blocks(path, _blocks(0))
    shutil.rmtree(path / store.SIDECAR_DIR)
    (path / store.LEGACY_LEDGER_FILE).write_text(f"{T[0]} 0 0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old writer's own warnings
        zarr.consolidate_metadata(str(path))
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    assert store.zone_stores(path) == [path]  # what monitor opens first
    assert TileLedger(path).done() == {(T[0], 0, 0)}
    assert store.append_times(path, ["2023-07-25T09:15:00Z"]) == [2]
    assert "consolidated_metadata" not in json.loads((path / "zarr.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, consolidated=False)
    assert ds["optical"].shape == (3, 4, 50, 70) and ds.time.size == 3
