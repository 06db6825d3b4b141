"""End-to-end fixtures: a synthetic catalog served by a real STAC API, shared by the e2e tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sar2opt.config import Config, ModelSpec

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
SYN_AOI = REPO / "examples" / "aoi" / "synthetic_para.geojson"
SYN_DATES = ("2023-07-01", "2023-08-31")
DEMO_CFG = "jobs/configs/demo.yaml"
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
    """Run a job script the way a user does, capturing its output."""
    return subprocess.run(
        [PY, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="session")
def syn_catalog(tmp_path_factory):
    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_scene

    root = tmp_path_factory.mktemp("syn")
    items = generate_scene(root / "catalog")
    with CatalogServer(root / "catalog") as server:
        yield {"root": root, "url": server.url, "items": items}


@pytest.fixture(scope="session")
def syn_trained(syn_catalog):
    """cube -> checkpoint on the synthetic scene, with a short training schedule."""
    root, url = syn_catalog["root"], syn_catalog["url"]
    cube = root / "cube.zarr"
    r = run_job(["jobs/build_cube.py", *syn_args(url), "--out", cube])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_job(
        [
            "jobs/train.py",
            "--cube",
            cube,
            "--out",
            root / "train",
            "--config",
            "jobs/configs/demo.yaml",
            "--set",
            "train.epochs=6",
            "--set",
            "train.patience=0",  # exactly 6 epochs: the tests read every one
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return {
        "cube": cube,
        "train": root / "train",
        "ckpt": root / "train" / "checkpoint",
        "train_log": r.stdout,
    }


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert len(errors) == 1, r.stderr
    return errors[0]


def write_json(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A real (untrained) checkpoint: bad-input checks must not depend on training."""
    from sar2opt.train.checkpoint import save_untrained_checkpoint

    cfg = Config(model=ModelSpec(ngf=8, depth=5))
    return save_untrained_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "checkpoint", cfg, git_sha="test"
    )


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

    ds = xr.open_zarr(store)
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


@pytest.fixture(scope="session")
def small_clean(syn_catalog, tiny_ckpt, short_tmp):
    """One uninterrupted `small_infer_args` run on a private local Ray: the reference the
    killed runs (one job, one node) are compared with."""
    root = syn_catalog["root"] / "small"
    root.mkdir(exist_ok=True)
    aoi = write_json(root / "aoi.geojson", SMALL_AOI)
    out = root / "clean.zarr"
    env = private_ray_env(short_tmp)
    r = run_job([*small_infer_args(syn_catalog["url"], aoi, tiny_ckpt), "--out", out], env=env)
    kill_all_with_env(f"RAY_TMPDIR={env['RAY_TMPDIR']}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"aoi": aoi, "out": out, "blocks": len(ledger_done(out))}
