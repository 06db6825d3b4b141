"""jobs/monitor.py on the synthetic catalog: infer the first two S1 dates, monitor to the end,
and the store equals a one-shot run over all four; a second monitor adds nothing; a run while
another holds the store's lock is refused."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import xarray as xr

from tests.e2e.conftest import REPO, run_job, write_json

pytestmark = pytest.mark.slow

# ~2.6 km square inside the synthetic scene: 2 x 2 blocks of 224 px, so the test stays short
SMALL_AOI = {
    "type": "Polygon",
    "coordinates": [
        [
            [-55.012, -5.012],
            [-54.988, -5.012],
            [-54.988, -4.988],
            [-55.012, -4.988],
            [-55.012, -5.012],
        ]
    ],
}


def _infer(aoi, ckpt, url, out, end, *extra):
    return run_job(
        [
            "jobs/infer_region.py",
            *("--aoi", aoi, "--checkpoint", ckpt, "--out", out),
            *("--start", "2023-07-01", "--end", end),
            *("--config", "jobs/configs/demo.yaml", "--stac-url", url, "--executor", "local"),
            *extra,
        ]
    )


def _monitor(aoi, ckpt, store, *extra):
    return run_job(
        ["jobs/monitor.py", "--aoi", aoi, "--checkpoint", ckpt, "--store", store, *extra]
    )


@pytest.fixture(scope="module")
def runs(syn_catalog, tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    aoi = write_json(root / "aoi.geojson", SMALL_AOI)
    url = syn_catalog["url"]
    full = root / "full.zarr"
    r = _infer(aoi, tiny_ckpt, url, full, "2023-08-31")
    assert r.returncode == 0, r.stdout + r.stderr
    store = root / "mon.zarr"
    r = _infer(aoi, tiny_ckpt, url, store, "2023-07-20")  # S1: 07-01 and 07-13
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(xr.open_zarr(store).time) == 2
    first = _monitor(aoi, tiny_ckpt, store, "--until", "2023-08-31", "--executor", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    return {"aoi": aoi, "store": store, "full": full, "first": first}


def test_monitor_appends_new_dates_equal_to_a_one_shot_run(runs) -> None:
    assert "appended 2 time step(s), 4 in all" in runs["first"].stdout
    mon, full = xr.open_zarr(runs["store"]), xr.open_zarr(runs["full"])
    np.testing.assert_array_equal(mon.time.values, full.time.values)
    assert mon.time.size == 4
    for name in ("optical", "source", "uncertainty"):
        np.testing.assert_array_equal(mon[name].values, full[name].values, err_msg=name)
    assert np.isfinite(mon["optical"].values).all()
    assert mon.attrs["s1_item_ids"] == full.attrs["s1_item_ids"]
    assert mon.attrs["pending_times"] == [] and mon.attrs["sar2opt_complete"] is True
    items = sorted((runs["store"] / "stac").glob("mon-*.json"))
    assert [json.loads(p.read_text())["properties"]["datetime"] for p in items] == list(
        mon.attrs["times_iso"]
    )


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


# The checks below call the jobs' main() in this process (a second process only adds imports);
# flock locks belong to an open file, so a lock held here still excludes the job's own open.


def test_second_monitor_adds_nothing(runs, tiny_ckpt, capsys) -> None:
    store, monitor = runs["store"], _load("monitor")
    before = (store / "zarr.json").read_text(), (store / "_sar2opt_ledger.txt").read_text()
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt), "--store", str(store)]
    assert monitor.main(monitor.parse_args([*args, "--until", "2023-08-31"])) == 0
    assert "monitor: up to date" in capsys.readouterr().out
    after = (store / "zarr.json").read_text(), (store / "_sar2opt_ledger.txt").read_text()
    assert after == before


def test_a_second_writer_is_refused_while_the_lock_is_held(
    runs, tiny_ckpt, syn_catalog, capsys
) -> None:
    from sar2opt.infer.ledger import StoreLock

    store, monitor, infer = runs["store"], _load("monitor"), _load("infer_region")
    before = (store / "zarr.json").read_text()
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt)]
    with StoreLock(store):  # another monitor (or infer_region) is writing
        code = monitor.main(monitor.parse_args([*args, "--store", str(store)]))
        assert code == 2 and "another run is writing" in _error_line(capsys)
        # infer_region --overwrite takes the same lock: it cannot replace the store meanwhile
        code = infer.main(
            infer.parse_args(
                [*args, "--out", str(store), "--overwrite", "--executor", "local"]
                + ["--start", "2023-07-01", "--end", "2023-07-20"]
                + ["--config", "jobs/configs/demo.yaml", "--stac-url", syn_catalog["url"]]
            )
        )
        assert code == 2 and "another run is writing" in _error_line(capsys)
    assert (store / "zarr.json").read_text() == before


def test_monitor_without_a_store_says_to_run_infer_region(runs, tiny_ckpt, tmp_path, capsys):
    monitor = _load("monitor")
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt)]
    assert monitor.main(monitor.parse_args([*args, "--store", str(tmp_path / "none.zarr")])) == 2
    assert "jobs/infer_region.py" in _error_line(capsys)
    assert not (tmp_path / "none.zarr").exists()
