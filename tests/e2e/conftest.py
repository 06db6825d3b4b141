"""End-to-end fixtures: a synthetic catalog served by a real STAC API, shared by the e2e tests."""

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
from http.server import BaseHTTPRequestHandler
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


@pytest.fixture(scope="session")
def syn_catalog(tmp_path_factory):
    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_scene

    root = tmp_path_factory.mktemp("syn")
    items = generate_scene(root / "catalog")
    with CatalogServer(root / "catalog") as server:
        yield {
            "root": root,
            "url": server.url,
            "secret_url": secret_url(server.url),
            "items": items,
        }


@pytest.fixture(scope="session")
def syn_trained(syn_catalog):
    """cube -> checkpoint on the synthetic scene, with a short training schedule. The cube is
    searched through the catalog URL with credentials (``secret_url``), and both jobs run with
    ``PLANTED_ENV``: ``test_security.py`` greps what they wrote."""
    root, url = syn_catalog["root"], syn_catalog["secret_url"]
    cube = root / "cube.zarr"
    r0 = run_job(["jobs/build_cube.py", *syn_args(url), "--out", cube])
    assert r0.returncode == 0, r0.stdout + r0.stderr
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
        "logs": r0.stdout + r0.stderr + r.stdout + r.stderr,
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


class _NotFound(BaseHTTPRequestHandler):
    """Every request answers 404, as a catalog whose asset was deleted does."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_error(404)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def broken_catalogs(syn_catalog, tmp_path_factory):
    """Two copies of the synthetic catalog, each served, whose first S1 item has a bad ``vv``
    asset: ``truncated`` (its COG cut to a third) and ``404`` (its href answers 404). The
    other assets are the synthetic scene's own files (only the items are copied)."""
    import shutil
    import threading
    from http.server import ThreadingHTTPServer

    from sar2opt.catalog.items import write_catalog
    from sar2opt.catalog.server import CatalogServer

    items = json.loads((syn_catalog["root"] / "catalog" / "items.json").read_text())["features"]
    s1 = min(
        (it for it in items if it["collection"] == "sentinel-1-rtc"),
        key=lambda it: it["properties"]["datetime"],
    )
    http = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("broken")
    out = {}
    servers = []
    try:
        for how in ("truncated", "404"):
            d = root / how
            d.mkdir()
            its = json.loads(json.dumps(items))
            asset = next(it for it in its if it["id"] == s1["id"])["assets"]["vv"]
            if how == "truncated":
                data = Path(asset["href"]).read_bytes()
                (d / "truncated.tif").write_bytes(data[: len(data) // 3])
                asset["href"] = str(d / "truncated.tif")
            else:
                asset["href"] = f"http://127.0.0.1:{http.server_port}/cogs/gone.tif"
            write_catalog(its, d)
            server = CatalogServer(d).start()
            servers.append(server)
            out[how] = {"url": server.url, "href": asset["href"]}
        yield out
    finally:
        for server in servers:
            server.stop()
        http.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def odd_checkpoints(tmp_path_factory):
    """Real untrained checkpoints that do not fit the synthetic catalog: ``junk`` (model.pt is
    random bytes), ``hh_hv`` (trained on other SAR bands), ``b8a`` (predicts B8A, which the
    catalog config does not give)."""
    import torch

    from sar2opt.train.checkpoint import MODEL_FILE, save_untrained_checkpoint

    root = tmp_path_factory.mktemp("odd_ckpt")
    cfg = Config(model=ModelSpec(ngf=8, depth=5))
    out = {}
    for name, key, value in (
        ("hh_hv", "in_bands", ["hh", "hv"]),
        ("b8a", "out_bands", ["B02", "B03", "B04", "B8A"]),
    ):
        d = save_untrained_checkpoint(root / name, cfg, git_sha="test")
        ckpt = torch.load(d / MODEL_FILE, weights_only=True)
        ckpt["meta"][key] = value
        torch.save(ckpt, d / MODEL_FILE)
        out[name] = d
    junk = root / "junk"
    junk.mkdir()
    (junk / MODEL_FILE).write_bytes(os.urandom(4096))
    out["junk"] = junk
    return out
