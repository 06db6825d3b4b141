"""A real Ray cluster on 127.0.0.1 for e2e tests: `ray start` processes with token auth."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.jobs import REPO

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_env() -> dict:
    """This process's environment without RAY_ADDRESS, with a token of the test's own (never
    an open Jobs API)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start --block ARGS` in a session of its own (so the whole node can be killed).

    The node's dashboard agent listens on a free port, not Ray's fixed default (52365): any
    other Ray on the machine (a test's local one, another user's) would hold that port, and a
    node without an agent runs no jobs ("No available agent to submit job")."""
    if not any(a.startswith("--dashboard-agent-listen-port") for a in args):
        args = [*args, f"--dashboard-agent-listen-port={free_port()}"]
    return subprocess.Popen(
        [RAY, "start", "--block", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_head(temp: Path, env: dict) -> tuple[subprocess.Popen, str, int]:
    """A head node (GCS, raylet, dashboard, Jobs API) with 2 CPUs: (process, url, gcs port),
    returned once the dashboard answers our token and the head's job agent is up."""
    gcs, dash, agent = free_port(), free_port(), free_port()
    proc = start_node(
        [
            "--head",
            "--num-cpus=2",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={agent}",
        ],
        env,
        temp / "head.log",
    )
    url = f"http://127.0.0.1:{dash}"
    wait_http(f"{url}/api/version", proc, temp / "head.log", auth_headers(env))
    # the agent that runs submitted jobs (its health check is open, by Ray's design)
    wait_http(f"http://127.0.0.1:{agent}/api/local_raylet_healthz", proc, temp / "head.log", {})
    return proc, url, gcs


def auth_headers(env: dict) -> dict:
    """The HTTP header that carries the cluster token of ``env`` (as `ray job` CLIs send it)."""
    return {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}


def wait_http(
    url: str, proc: subprocess.Popen, log: Path, headers: dict, timeout_s: float = 600
) -> None:
    """Wait until ``url`` answers a GET with ``headers`` (our token) with 200.

    Connection errors and 5xx mean "not up yet"; 401/403 with our own token, or any other
    status, mean the head is not the token-auth head we started: fail at once.
    """
    import requests

    deadline = time.time() + timeout_s
    while True:
        try:
            r = requests.get(url, headers=headers, timeout=2)
        except requests.RequestException:
            r = None
        if r is not None and r.status_code == 200:
            return
        if r is not None and r.status_code < 500:
            raise RuntimeError(f"ray head answered {r.status_code} to our token: {r.text[:300]}")
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"ray head did not start: {log.read_text()[-3000:]}")
        time.sleep(1)


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
    """Signal the node's whole process group; SIGKILL it if it is still up after ``grace_s``."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)  # `ray start --block` can take half a minute to wind down
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def leave_cluster(
    proc: subprocess.Popen, url: str, env: dict, resource: str, timeout_s: float = 30
) -> None:
    """Take a worker node out of a cluster that lives on: SIGTERM (the node leaves the head at
    once), wait until the head lists no ALIVE node with ``resource`` (at most ``timeout_s``),
    then SIGKILL what is left of it. ``stop_node`` alone takes ~10 s here (`ray start --block`
    winding down), and a node only SIGKILLed stays ALIVE to the head for ~17 s (health checks):
    the head's next job could be placed on it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout_s
    while alive_with(url, env, resource) and time.time() < deadline:
        time.sleep(0.1)
    stop_node(proc, signal.SIGKILL)


def cluster_nodes(url: str, env: dict) -> list[dict]:
    """The cluster's nodes as Ray's state API lists them (node_id, state, resources_total, ...),
    asked with our token; [] while the dashboard cannot answer."""
    import requests

    try:
        r = requests.get(f"{url}/api/v0/nodes", headers=auth_headers(env), timeout=10)
    except requests.RequestException:
        return []
    if r.status_code != 200:
        return []
    return list(r.json()["data"]["result"]["result"])


def alive_with(url: str, env: dict, resource: str) -> list[str]:
    """Ids of the ALIVE nodes that offer ``resource``."""
    return [
        n["node_id"]
        for n in cluster_nodes(url, env)
        if n.get("state") == "ALIVE" and resource in (n.get("resources_total") or {})
    ]


def submit_cmd(url: str, script: str, args: list) -> list[str]:
    """`ray job submit --address URL -- python SCRIPT ARGS` as an argv list."""
    return [RAY, "job", "submit", "--address", url, "--", sys.executable, str(REPO / script)] + [
        str(a) for a in args
    ]
