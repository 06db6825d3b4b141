"""Monitoring rules (which times to do), and appending time steps to a block store safely."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sar2opt.config import Config, config_to_dict
from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.infer import store as store_mod
from sar2opt.infer.monitor import search_start, store_config, times_to_do, until_day
from sar2opt.infer.store import (
    StoreMissingError,
    append_times,
    create_store,
    read_attrs,
    time_length,
    write_block,
    zone_stores,
)

T = ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z", "2023-07-25T09:15:00Z", "2023-08-06T09:15:00Z"]
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * 70, 9_400_000.0 + 10 * 50))


def test_only_acquisitions_after_the_last_time_step_are_new() -> None:
    # the search starts on the last step's day, so it finds that step again: not new
    assert times_to_do(T[1:], T[:2], []) == (T[2:], T[2:])
    assert times_to_do(T[1:2], T[:2], []) == ([], [])  # up to date
    # an acquisition that appears later with an older date is not slotted in
    late = "2023-07-10T09:15:00+00:00"
    assert times_to_do([late, T[2]], T[:2], []) == ([T[2]], [T[2]])
    # the same instant written differently is not new
    assert times_to_do(["2023-07-13T09:15:00+00:00"], T[:2], []) == ([], [])


def test_pending_times_are_finished_first_and_appended_once() -> None:
    # killed after the append: the pending step is in times_iso, so it is only filled
    assert times_to_do(T[2:], T[:3], [T[2]]) == (T[2:], [T[3]])
    # killed before the append committed: pending but not in times_iso
    assert times_to_do(T[2:], T[:2], [T[2], T[3]]) == (T[2:], T[2:])
    # pending and found again are done once, in time order
    assert times_to_do([T[3], T[2]], T[:2], [T[3]]) == (T[2:], T[2:])


def test_search_starts_at_the_earliest_unfinished_or_last_step() -> None:
    assert search_start([{"times_iso": T[:2]}]) == T[1]
    assert search_start([{"times_iso": T[:3], "pending_times": [T[2]]}]) == T[2]
    # two zones, one ahead of the other (a run died between them)
    assert search_start([{"times_iso": T[:3]}, {"times_iso": T[:2]}]) == T[1]


def test_a_missing_store_says_to_run_infer_region_first(tmp_path) -> None:
    with pytest.raises(StoreMissingError, match="infer_region"):
        zone_stores(tmp_path / "m.zarr")
    (tmp_path / "m.zarr.partial").mkdir()
    with pytest.raises(StoreMissingError, match="not finished"):
        zone_stores(tmp_path / "m.zarr")
    assert issubclass(StoreMissingError, Sar2OptError)


def test_zone_stores_finds_a_single_store_or_a_folder_of_zones(tmp_path) -> None:
    one = create_store(tmp_path / "one.zarr", GRID, T[:1], ["B04"], {}, 32)
    assert zone_stores(one) == [one]
    a = create_store(tmp_path / "multi" / "21S.zarr", GRID, T[:1], ["B04"], {}, 32)
    b = create_store(tmp_path / "multi" / "22S.zarr", GRID, T[:1], ["B04"], {}, 32)
    assert zone_stores(tmp_path / "multi") == [a, b]


def test_until_is_a_checked_day_or_today() -> None:
    import datetime as dt

    assert until_day("2023-08-31") == "2023-08-31"
    assert until_day(None) == dt.datetime.now(dt.timezone.utc).date().isoformat()
    with pytest.raises(Sar2OptError, match="--until must be a date"):
        until_day("31/08/2023")


def test_store_config_starts_from_the_recorded_one() -> None:
    recorded = config_to_dict(Config())
    recorded["infer"]["tta_flips"] = 3
    recorded["infer"]["tile_px"] = 128
    cfg = store_config(recorded, None, ["infer.tile_px=96"])
    assert cfg.infer.tta_flips == 3 and cfg.infer.tile_px == 96
    recorded["infer"]["no_such_key"] = 1
    with pytest.raises(Sar2OptError, match="recorded config no longer loads"):
        store_config(recorded, None, [])


def _filled_store(tmp_path):
    path = create_store(tmp_path / "m.zarr", GRID, T[:2], ["B04"], {"zone": "21S", "x": [1]}, 32)
    opt = np.arange(32 * 32, dtype=np.float32).reshape(1, 32, 32)
    write_block(path, 1, (0, 0, 32, 32), opt, np.full((32, 32), 2), np.ones((32, 32)))
    return path, opt


def test_append_times_keeps_data_attrs_and_crs(tmp_path) -> None:
    path, opt = _filled_store(tmp_path)
    assert append_times(path, T[2:], {"s1_item_ids": [["a"], ["b"], ["c"], ["d"]]}) == [2, 3]
    attrs = read_attrs(path)
    assert attrs["times_iso"] == T and attrs["zone"] == "21S" and attrs["x"] == [1]
    assert attrs["s1_item_ids"][3] == ["d"] and attrs["grid"] == GRID.to_dict()
    ds = xr.open_zarr(path)
    assert ds["optical"].shape == (4, 1, 50, 70) and ds.rio.crs.to_epsg() == 32721
    np.testing.assert_array_equal(ds["optical"][1, :, :32, :32].values, opt)
    assert np.isnan(ds["optical"][2:].values).all() and (ds["source"][2:].values == 0).all()
    assert ds["optical"].attrs["long_name"].startswith("surface reflectance")
    assert list(ds.time.values.astype("datetime64[D]").astype(str)) == [t[:10] for t in T]
    assert ds["source"].dtype == np.uint8 and ds["source"][1, 0, 0] == 2
    edge = np.full((1, 18, 38), 0.25, np.float32)  # the last (clipped) block of a new step
    write_block(path, 3, (32, 32, 50, 70), edge, np.ones((18, 38)), np.ones((18, 38)))
    np.testing.assert_array_equal(xr.open_zarr(path)["optical"][3, :, 32:, 32:], edge)


def test_append_killed_before_its_commit_is_redone_not_doubled(tmp_path, monkeypatch) -> None:
    path, opt = _filled_store(tmp_path)

    def die(*a, **k):
        raise KeyboardInterrupt  # killed after the arrays grew, before times_iso was written

    with monkeypatch.context() as m:
        m.setattr(store_mod, "update_attrs", die)
        with pytest.raises(KeyboardInterrupt):
            append_times(path, T[2:])
    assert time_length(path) == 4 and read_attrs(path)["times_iso"] == T[:2]
    assert append_times(path, T[2:]) == [2, 3]
    ds = xr.open_zarr(path)
    assert ds["optical"].shape[0] == ds["source"].shape[0] == time_length(path) == 4
    assert ds.time.size == 4
    np.testing.assert_array_equal(ds["optical"][1, :, :32, :32].values, opt)


def test_monitor_cronjob_submits_a_locked_down_rayjob_running_monitor() -> None:
    """cluster/monitor-cronjob.yaml: the RayJob it submits (inside a ConfigMap, so the generic
    cluster tests do not see it) obeys the kuberay-* rules and runs jobs/monitor.py."""
    from importlib.metadata import version
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "cluster" / "monitor-cronjob.yaml").read_text()
    docs = {d["kind"]: d for d in yaml.safe_load_all(text) if d}
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and len(cron["schedule"].split()) == 5
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    (cm,) = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
    assert cm == docs["ConfigMap"]["metadata"]["name"]
    job = yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["entrypoint"].startswith("python jobs/monitor.py --aoi ")
    assert "--store " in job["spec"]["entrypoint"]
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token" and spec["rayVersion"] == version("ray")
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert docs["Role"]["rules"][0]["resources"] == ["rayjobs"]  # nothing more
