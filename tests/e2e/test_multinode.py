"""A real two-node Ray cluster on this machine (the session's head, ``ray_head``, and a worker
node): `ray job submit` infer_region with its actors on the worker node (a custom resource only
that node offers), lose that node once it has written blocks, and a replacement node (as an
autoscaler would start) finishes the job; the job's own record says both nodes did blocks, and
the mosaic equals an uninterrupted run."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from sar2opt.infer.store import partial_path
from tests.helpers.jobs import (
    REPO,
    assert_same_store,
    ledger_done,
    small_infer_args,
    wait_for,
)
from tests.helpers.ray_cluster import (
    alive_with,
    leave_cluster,
    start_node,
    stop_node,
    submit_cmd,
)

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

RESOURCE = "s2o_infer_node"  # only worker nodes offer it: the actors can run nowhere else
KILL_AFTER = 2  # blocks in the ledger


def _worker(gcs: int, env: dict, log: Path) -> subprocess.Popen:
    return start_node(
        [
            f"--address=127.0.0.1:{gcs}",
            "--num-cpus=2",
            "--node-ip-address=127.0.0.1",
            f'--resources={{"{RESOURCE}": 1}}',
        ],
        env,
        log,
    )


def test_worker_node_lost_mid_job(syn_catalog, tiny_ckpt, small_clean, ray_head):
    temp = Path(tempfile.mkdtemp(prefix="s2o-mn-", dir="/tmp"))
    # the head's token; the worker nodes in Ray's default temp dir, as on a machine of their own
    env = {k: v for k, v in ray_head["env"].items() if k != "RAY_TMPDIR"}
    url, gcs = ray_head["url"], ray_head["gcs_port"]
    first = second = None
    try:
        first = _worker(gcs, env, temp / "worker1.log")
        wait_for(
            "the worker node to register",
            lambda: alive_with(url, env, RESOURCE),
            first,
            timeout_s=300,
            log=temp / "worker1.log",
        )
        (lost,) = alive_with(url, env, RESOURCE)
        out = temp / "mosaic-mn.zarr"
        args = small_infer_args(
            syn_catalog["url"],
            small_clean["aoi"],
            tiny_ckpt,
            *("--set", f"infer.actor_resources={{{RESOURCE}: 1}}"),
        )[1:]
        job = subprocess.Popen(
            submit_cmd(url, "jobs/infer_region.py", [*args, "--out", out]),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
        reader.start()
        # lose the worker node once it has written blocks (they reach the ledger)
        work = partial_path(out)
        wait_for(
            f"{KILL_AFTER} blocks in the ledger",
            lambda: len(ledger_done(work)) >= KILL_AFTER,
            job,
            timeout_s=900,
        )
        stop_node(first, signal.SIGKILL)
        before_kill = len(ledger_done(work))
        assert before_kill < small_clean["blocks"], "the job ended before the node was lost"
        second = _worker(gcs, env, temp / "worker2.log")  # the replacement node
        job.wait(timeout=900)
        reader.join(timeout=60)
        log = "".join(lines)
        assert job.returncode == 0, log[-4000:]
        assert "succeeded" in log
        # the job's own record: where each block was done
        by_node = {n: int(k) for n, k in re.findall(r"ray: blocks done on node (\S+): (\d+)", log)}
        assert by_node.get(lost, 0) >= before_kill, (lost, by_node, log[-4000:])
        replacement = [n for n in by_node if n != lost]
        assert len(replacement) == 1 and by_node[replacement[0]] > 0, by_node
        assert sum(by_node.values()) == small_clean["blocks"], by_node
        assert_same_store(out, small_clean["out"])
    finally:
        if first is not None:
            stop_node(first, signal.SIGKILL)  # lost above (or now, if the job failed first)
        if second is not None:  # out of the head's cluster: the session's next jobs use it
            leave_cluster(second, url, env, RESOURCE)
        shutil.rmtree(temp, ignore_errors=True)
