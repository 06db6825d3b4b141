"""What the end-to-end tests share: paths, the synthetic scene's arguments, running a job as a
process, waiting on events, killing a run, comparing stores, planted secrets."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.data import REPO

PY = sys.executable


SYN_AOI = REPO / "examples" / "aoi" / "synthetic_para.geojson"


SYN_DATES = ("2023-07-01", "2023-08-31")


DEMO_CFG = "jobs/configs/demo.yaml"


#: The synthetic model's training (``syn_trained``): exactly this many epochs (patience 0).
#: Fewer fail test_swaths_of_both_orbit_directions_meet_without_a_seam: at 4 its step across a
#: cut between passes is 1.2x, not 2.5x, the step inside a swath (at 6: 2.5x and 2.8x)
SYN_EPOCHS = 6


# ~2.6 km square inside the synthetic scene: 2 x 2 blocks of 224 px, so the tests stay short
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


#: Credentials planted in the environment of every job these tests run (and in the catalog
#: URL of ``syn_catalog["secret_url"]``): ``test_security.py`` greps every output for them.
PLANTED_ENV = {
    "PC_SDK_SUBSCRIPTION_KEY": "pc" + secrets.token_hex(16),
    "AWS_SECRET_ACCESS_KEY": "aws" + secrets.token_hex(16),
}


URL_PASSWORD = "pw" + secrets.token_hex(16)


URL_TOKEN = "sig" + secrets.token_hex(16)


PLANTED = (*PLANTED_ENV.values(), URL_PASSWORD, URL_TOKEN)


def secret_url(url: str) -> str:
    """``url`` with a user, a password and a query token: what a private catalog needs."""
    return url.replace("://", f"://sar2opt:{URL_PASSWORD}@", 1) + f"?sig={URL_TOKEN}"


def syn_args(
    url: str,
    *,
    aoi: object = SYN_AOI,
    start: str = SYN_DATES[0],
    end: str = SYN_DATES[1],
    config: str | None = DEMO_CFG,
) -> list:
    """The arguments every job takes on the synthetic scene: AOI, dates, config, STAC API."""
    args = ["--aoi", aoi, "--start", start, "--end", end, "--stac-url", url]
    return [*args, "--config", config] if config else args


def run_job(
    args: list[str], timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a job script the way a user does, capturing its output; the environment has the
    ``PLANTED_ENV`` credentials (as a cluster's would)."""
    env = (os.environ if env is None else env) | PLANTED_ENV
    return subprocess.run(
        [PY, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert len(errors) == 1, r.stderr
    return errors[0]


def write_json(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def wait_for(
    what: str,
    ready: Callable[[], bool],
    proc: subprocess.Popen | None = None,
    timeout_s: float = 900,
    log: Path | None = None,
) -> None:
    """Poll ``ready()`` until it holds (an event: a file, a ledger line, Ray state), failing
    at once if ``proc`` ends first, or after ``timeout_s`` (generous: a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        ended = proc is not None and proc.poll() is not None
        if ended or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            why = f"exited {proc.returncode}" if ended else f"{timeout_s:g} s passed"
            raise AssertionError(f"waiting for {what}: {why}\n{tail}")
        time.sleep(0.02)


def kill_all_with_env(marker: str, timeout_s: float = 60) -> None:
    """SIGKILL every process whose environment holds ``marker`` (our run's unique RAY_TMPDIR)
    until none is left: Ray workers may outlive the killed driver for a moment, and one
    still writing would change what the re-run finds."""
    want, deadline = marker.encode(), time.time() + timeout_s
    while time.time() < deadline:
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if want in (d / "environ").read_bytes().split(b"\0"):
                        pids.append(int(d.name))
                except OSError:
                    continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"processes with {marker} still alive")


def private_ray_env(short_tmp: Path) -> dict:
    """This environment for a job that starts its own local Ray (no RAY_ADDRESS), in a fresh
    short RAY_TMPDIR: its marker for ``kill_all_with_env``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_TMPDIR": tempfile.mkdtemp(prefix="j", dir=short_tmp)}


def ledger_done(store: Path) -> set:
    """The blocks the store's ledger holds (``infer.ledger``: torn last line ignored)."""
    from sar2opt.infer.ledger import TileLedger

    return TileLedger(store).done()


def data_vars(store: Path) -> dict:
    """Every data variable of a store as numpy arrays, and its time axis."""
    import xarray as xr

    ds = xr.open_zarr(store, consolidated=False)
    return {"time": ds.time.values} | {k: ds[k].values for k in ds.data_vars}


def assert_same_store(got: Path, want: Path) -> None:
    """Every data variable (whatever the store holds: optical, source, uncertainty, ...)
    bit-identical, NaNs in the same places."""
    import numpy as np

    a, b = data_vars(got), data_vars(want)
    assert sorted(a) == sorted(b) and {"optical", "source", "uncertainty"} <= set(a)
    for name in b:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)


def small_infer_args(url: str, aoi: Path, ckpt: Path, *extra: str) -> list:
    """jobs/infer_region.py over SMALL_AOI, all four S1 dates, one block per task and per
    forward (a job slow enough to be stopped half-way, on a small scene)."""
    return [
        "jobs/infer_region.py",
        *syn_args(url, aoi=aoi),
        *("--checkpoint", ckpt),
        *("--set", "infer.read_blocks=1", "--set", "infer.batch_size=1", *extra),
    ]


def load_job(name: str):
    """``jobs/<name>.py`` as a module, to call its ``main()`` in this process: a bad-input
    check then costs no second interpreter and its imports."""
    import importlib.util

    key = f"_sar2opt_job_{name}"  # registered: dataclasses look their module up by name
    spec = importlib.util.spec_from_file_location(key, REPO / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def error_line(capsys) -> str:
    """The one ``error:`` line an in-process ``main()`` printed (pytest's ``capsys``)."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]
