"""jobs/infer_region.py itself SIGKILLed half-way (the job's whole process group: the driver
and the local Ray it started), then the same command again: it resumes from the ledger, does
only the missing blocks, and every variable is bit-identical to an uninterrupted run.

A kill can land in the middle of a chunk write (zarrs writes in place); CI caught the resume
then failing on the torn chunk ("incomplete frame"). Where that happens is luck, so the test
also tears one written edge block itself, as such a kill would have left it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import xarray as xr

from sar2opt.infer.store import partial_path
from tests.helpers.jobs import (
    PY,
    REPO,
    assert_same_store,
    kill_all_with_env,
    ledger_done,
    private_ray_env,
    run_job,
    small_infer_args,
    wait_for,
)

pytestmark = pytest.mark.slow

KILL_AFTER = 3  # blocks in the ledger


def test_killed_infer_job_resumes_only_missing_blocks_bit_identical(
    syn_catalog, tiny_ckpt, small_clean, short_tmp, tmp_path
) -> None:
    out = tmp_path / "mosaic.zarr"
    cmd = [*small_infer_args(syn_catalog["url"], small_clean["aoi"], tiny_ckpt), "--out", out]
    env = private_ray_env(short_tmp)
    total = small_clean["blocks"]
    assert total >= 4 * KILL_AFTER  # room for a kill half-way

    log = tmp_path / "run1.log"
    with log.open("w") as f:  # own process group: SIGKILL takes the driver and its Ray
        proc = subprocess.Popen(
            [PY, *map(str, cmd)], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    work = partial_path(out)
    try:
        wait_for(
            f"{KILL_AFTER} blocks in the ledger",
            lambda: len(ledger_done(work)) >= KILL_AFTER,
            proc,
            log=log,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        kill_all_with_env(f"RAY_TMPDIR={env['RAY_TMPDIR']}")
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(ledger_done(work))
    assert KILL_AFTER <= killed_at < total, (killed_at, log.read_text()[-3000:])
    assert not out.exists()  # the job never finished
    killed_at -= tear_an_edge_block(work)

    r = run_job(cmd, env=env)  # the same command
    kill_all_with_env(f"RAY_TMPDIR={env['RAY_TMPDIR']}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"infer: resuming {work}" in r.stdout
    wrote = [int(n) for n in re.findall(r"infer: zone \S+ wrote (\d+) tiles", r.stdout)]
    assert wrote == [total - killed_at], (wrote, r.stdout[-3000:])  # only the missing ones
    # the job's own record of where the blocks were done: the missing ones, nothing else
    by_node = [int(n) for n in re.findall(r"ray: blocks done on node \S+: (\d+)", r.stdout)]
    assert sum(by_node) == total - killed_at, r.stdout[-3000:]
    assert len(ledger_done(out)) == total and not work.exists()
    assert_same_store(out, small_clean["out"])


def tear_an_edge_block(store: Path) -> int:
    """Half-write the chunks of one ledger block at the grid's edge and drop it from the
    ledger: a kill mid-write. Edge chunks reach past the grid, so writing the block again
    reads the old chunk back (the case that failed). Returns 1 (the block)."""
    from sar2opt.infer import store as st
    from sar2opt.infer.ledger import TileLedger

    attrs = st.read_attrs(store)
    block_px = attrs[st.BLOCK_PX_ATTR]
    height, width = xr.open_zarr(store)[st.OPTICAL_VAR].shape[-2:]
    time, bi, bj = max(TileLedger(store).done(), key=lambda k: k[1] + k[2])
    # an edge chunk (any 3 blocks of the 2 x 2 grid hold one): the fault reaches the read-back
    assert (bi + 1) * block_px > height or (bj + 1) * block_px > width, (bi, bj, block_px)
    t = attrs[st.TIMES_ATTR].index(time)
    for var in st.VARS:
        lead = [str(t), "0"] if var == st.OPTICAL_VAR else [str(t)]
        f = store.joinpath(var, "c", *lead, str(bi), str(bj))
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    ledger = store / st.LEDGER_FILE
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(x for x in lines if x.split() != [time, str(bi), str(bj)]))
    assert (time, bi, bj) not in TileLedger(store).done()
    return 1
