"""End-to-end fixtures: a synthetic catalog served by a real STAC API, shared by the e2e tests."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from sar2opt.config import Config, ModelSpec
from tests.helpers.jobs import (
    SMALL_AOI,
    SYN_EPOCHS,
    kill_all_with_env,
    ledger_done,
    private_ray_env,
    run_job,
    secret_url,
    small_infer_args,
    syn_args,
    write_json,
)
from tests.helpers.ray_cluster import start_head, stop_node, token_env


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
            f"train.epochs={SYN_EPOCHS}",
            "--set",
            "train.patience=0",  # exactly SYN_EPOCHS epochs: the tests read every one
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


@pytest.fixture(scope="session")
def syn_mosaic(syn_catalog, syn_trained):
    """One infer_region run of ``syn_trained``'s checkpoint over the synthetic scene (the
    default executor: Ray), searched through the credentialed URL with ``PLANTED_ENV``, as
    ``syn_trained``: ``test_synthetic_pipeline.py`` scores the mosaic, ``test_security.py``
    greps it and the run's output. Read-only: a test that writes to it works on a copy."""
    out = syn_catalog["root"] / "mosaic.zarr"
    args = [*syn_args(syn_catalog["secret_url"]), "--checkpoint", syn_trained["ckpt"]]
    r = run_job(["jobs/infer_region.py", *args, "--out", out])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"out": out, "run": r}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A real (untrained) checkpoint: bad-input checks must not depend on training."""
    from sar2opt.train.checkpoint import save_untrained_checkpoint

    cfg = Config(model=ModelSpec(ngf=8, depth=5))
    return save_untrained_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "checkpoint", cfg, git_sha="test"
    )


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


#: The session's token-auth head while it runs ("proc", "root") and the last test that uses it
_HEAD: dict = {}


def _stop_head() -> None:
    proc, root = _HEAD.pop("proc", None), _HEAD.pop("root", None)
    if proc is not None:  # nobody uses it any more: a short grace, then SIGKILL (no ~10 s)
        stop_node(proc, grace_s=2)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after `-k`/`-m` deselect
def pytest_collection_modifyitems(items):
    users = [it.nodeid for it in items if "ray_head" in getattr(it, "fixturenames", ())]
    _HEAD["last_user"] = users[-1] if users else None


def pytest_runtest_teardown(item, nextitem):
    """The head is stopped after the last test that uses it, not at the end of the session:
    idle, it still takes ~6 % of a core from the tests after it."""
    if item.nodeid == _HEAD.get("last_user"):
        _stop_head()


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head (GCS, raylet, dashboard, Jobs API) on 127.0.0.1 with a token of its own:
    `ray job submit` (test_ray_job_submit.py) and the two-node cluster that loses a node
    (test_multinode.py) share it, as each start costs seconds; stopped after the last test
    that uses it. Its temp dir is this environment's Ray temp dir (RAY_TMPDIR), so a bare
    `ray.init()` in ``env`` finds it as "the cluster on this machine", like any `ray start`."""
    root = Path(tempfile.mkdtemp(prefix="s2o-head-", dir="/tmp"))
    env = token_env() | {"RAY_TMPDIR": str(root)}
    temp = root / "ray"  # Ray's default temp dir under RAY_TMPDIR: holds ray_current_cluster
    temp.mkdir()
    _HEAD["root"] = root
    try:
        proc, url, gcs = start_head(temp, env)
        _HEAD["proc"] = proc
        # where `ray start` tells this machine its cluster is (host: the node's own IP); it
        # writes that file once the node is up, a moment after the dashboard answers
        found, deadline = temp / "ray_current_cluster", time.time() + 300
        while not found.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = found.read_text().strip()
        assert address.endswith(f":{gcs}"), address
        yield {"url": url, "env": env, "gcs": address, "gcs_port": gcs, "temp": root}
    finally:
        _stop_head()  # if still up (the last user did not run)
