"""End-to-end fixtures: a synthetic catalog served by a real STAC API, shared by the e2e tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sar2opt.config import Config, ModelSpec

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
SYN_AOI = REPO / "examples" / "aoi" / "synthetic_para.geojson"
SYN_DATES = ("2023-07-01", "2023-08-31")
DEMO_CFG = "jobs/configs/demo.yaml"


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
