"""jobs/monitor.py on the synthetic catalog: infer the first two S1 dates, monitor to the end,
and the store equals a one-shot run over all four; a second monitor adds nothing; a run while
another holds the store's lock is refused; a monitor SIGKILLed mid-append is finished by the
next one; of two monitors started at once, one works and the other is refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess

import numpy as np
import pytest
import xarray as xr

from sar2opt.infer.store import LEDGER_FILE
from tests.helpers.jobs import (
    PY,
    REPO,
    SMALL_AOI,
    assert_same_store,
    error_line,
    ledger_done,
    load_job,
    one_error_line,
    run_job,
    wait_for,
    write_json,
)

pytestmark = pytest.mark.slow
UNTIL = "2023-08-31"


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


def _monitor_cmd(aoi, ckpt, store, *extra) -> list:
    return ["jobs/monitor.py", "--aoi", aoi, "--checkpoint", ckpt, "--store", store, *extra]


def _monitor(aoi, ckpt, store, *extra):
    return run_job(_monitor_cmd(aoi, ckpt, store, *extra))


@pytest.fixture(scope="module")
def runs(syn_catalog, tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    aoi = write_json(root / "aoi.geojson", SMALL_AOI)
    url = syn_catalog["url"]
    full = root / "full.zarr"
    r = _infer(aoi, tiny_ckpt, url, full, "2023-08-31")
    assert r.returncode == 0, r.stdout + r.stderr
    store = root / "mon.zarr"
    # S1: 07-01 and 07-13; one block per task, so a monitor on it can be stopped half-way
    r = _infer(aoi, tiny_ckpt, url, store, "2023-07-20", "--set", "infer.read_blocks=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(xr.open_zarr(store, consolidated=False).time) == 2
    base = root / "base.zarr"  # the two-date store, for the tests that monitor it again
    shutil.copytree(store, base)
    first = _monitor(aoi, tiny_ckpt, store, "--until", UNTIL, "--executor", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    return {"aoi": aoi, "store": store, "full": full, "first": first, "base": base}


def test_monitor_appends_new_dates_equal_to_a_one_shot_run(runs) -> None:
    assert "appended 2 time step(s), 4 in all" in runs["first"].stdout
    mon, full = (
        xr.open_zarr(runs["store"], consolidated=False),
        xr.open_zarr(runs["full"], consolidated=False),
    )
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


# The checks below call the jobs' main() in this process (a second process only adds imports);
# flock locks belong to an open file, so a lock held here still excludes the job's own open.


def test_second_monitor_adds_nothing(runs, tiny_ckpt, capsys) -> None:
    store, monitor = runs["store"], load_job("monitor")
    before = (store / "zarr.json").read_text(), (store / LEDGER_FILE).read_text()
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt), "--store", str(store)]
    assert monitor.main(monitor.parse_args([*args, "--until", "2023-08-31"])) == 0
    assert "monitor: up to date" in capsys.readouterr().out
    after = (store / "zarr.json").read_text(), (store / LEDGER_FILE).read_text()
    assert after == before


def test_a_second_writer_is_refused_while_the_lock_is_held(
    runs, tiny_ckpt, syn_catalog, capsys
) -> None:
    from sar2opt.infer.ledger import StoreLock

    store, monitor, infer = runs["store"], load_job("monitor"), load_job("infer_region")
    before = (store / "zarr.json").read_text()
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt)]
    with StoreLock(store):  # another monitor (or infer_region) is writing
        code = monitor.main(monitor.parse_args([*args, "--store", str(store)]))
        assert code == 2 and "another run is writing" in error_line(capsys)
        # infer_region --overwrite takes the same lock: it cannot replace the store meanwhile
        code = infer.main(
            infer.parse_args(
                [*args, "--out", str(store), "--overwrite", "--executor", "local"]
                + ["--start", "2023-07-01", "--end", "2023-07-20"]
                + ["--config", "jobs/configs/demo.yaml", "--stac-url", syn_catalog["url"]]
            )
        )
        assert code == 2 and "another run is writing" in error_line(capsys)
    assert (store / "zarr.json").read_text() == before


def test_monitor_without_a_store_says_to_run_infer_region(runs, tiny_ckpt, tmp_path, capsys):
    monitor = load_job("monitor")
    args = ["--aoi", str(runs["aoi"]), "--checkpoint", str(tiny_ckpt)]
    assert monitor.main(monitor.parse_args([*args, "--store", str(tmp_path / "none.zarr")])) == 2
    assert "jobs/infer_region.py" in error_line(capsys)
    assert not (tmp_path / "none.zarr").exists()


def _copy_base(runs, tmp_path):
    store = tmp_path / "mon.zarr"
    shutil.copytree(runs["base"], store)
    return store


def test_monitor_killed_mid_append_is_finished_by_the_next_run(runs, tiny_ckpt, tmp_path):
    """SIGKILL jobs/monitor.py once it has written some blocks of the new time steps; the
    same command again does only the missing blocks, and the store is bit-identical to the
    uninterrupted monitor run's (every variable, the time axis, the S1 items)."""
    store = _copy_base(runs, tmp_path)
    before = len(ledger_done(store))
    new = len(ledger_done(runs["store"])) - before  # blocks the monitor adds
    cmd = _monitor_cmd(runs["aoi"], tiny_ckpt, store, "--until", UNTIL, "--executor", "local")
    log = tmp_path / "run1.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [PY, *map(str, cmd)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for("2 new blocks", lambda: len(ledger_done(store)) >= before + 2, proc, log=log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(ledger_done(store)) - before
    assert 2 <= killed_at < new, (killed_at, new, log.read_text()[-3000:])
    attrs = xr.open_zarr(store, consolidated=False).attrs
    assert len(attrs["pending_times"]) == 2 and attrs["sar2opt_complete"] is False

    r = run_job(cmd)  # the same command
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wrote = [int(n) for n in re.findall(r"monitor: zone \S+ wrote (\d+) tiles", r.stdout)]
    assert wrote == [new - killed_at], (wrote, r.stdout[-3000:])  # only the missing ones
    assert_same_store(store, runs["store"])
    done, want = (
        xr.open_zarr(store, consolidated=False).attrs,
        xr.open_zarr(runs["store"], consolidated=False).attrs,
    )
    assert done["pending_times"] == [] and done["sar2opt_complete"] is True
    assert done["s1_item_ids"] == want["s1_item_ids"]
    assert done["times_iso"] == want["times_iso"]


def test_two_monitors_started_at_once_one_works_one_is_refused(runs, tiny_ckpt, tmp_path):
    """Two jobs/monitor.py processes on one store at the same moment: exactly one appends,
    the other exits 2 with its one `error:` line, and the store is the single run's."""
    store = _copy_base(runs, tmp_path)
    cmd = _monitor_cmd(runs["aoi"], tiny_ckpt, store, "--until", UNTIL, "--executor", "local")
    procs = [
        subprocess.Popen(
            [PY, *map(str, cmd)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [(r.returncode, r.stdout[-1500:], r.stderr[-1500:]) for r in results]
    ok, refused = sorted(results, key=lambda r: r.returncode)
    assert "appended 2 time step(s), 4 in all" in ok.stdout
    assert "another run is writing" in one_error_line(refused)
    assert "Traceback" not in refused.stderr
    assert_same_store(store, runs["store"])
    assert xr.open_zarr(store, consolidated=False).attrs["pending_times"] == []
