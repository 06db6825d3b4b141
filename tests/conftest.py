"""Shared fixtures (a short temp dir for Ray, markers and timeouts); shared helpers live in
``tests/helpers``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.data import REPO

SLOW_TIMEOUT_S = 1800  # a whole job end to end on a loaded 2-core machine; others: pyproject
E2E = REPO / "tests" / "e2e"


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(items):
    """Every test under tests/e2e/ runs whole jobs as processes: it is `slow` (`make test-fast`
    leaves it out). `slow` tests get a longer pytest-timeout than pyproject's default; an
    explicit `timeout` marker wins."""
    for item in items:
        if E2E in Path(item.path).parents and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def short_tmp():
    """Ray's socket paths must stay short: a temp dir directly under /tmp, for the Ray temp
    dirs of the tests (``tempfile.mkdtemp(dir=short_tmp)``); removed with them at the end."""
    d = tempfile.mkdtemp(prefix="s2o-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local(short_tmp):
    """The one in-process local Ray of the suite (2 CPUs, no dashboard), started by the first
    test that asks for it and shut down at the end: each start costs seconds. Jobs run as
    processes start their own (``init_ray``: a private local cluster)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="r", dir=short_tmp)  # short: Ray's socket paths are capped
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _isolated_ray_env():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: on shared cores, intra-op threads cost far more than they give. Modules of
    tiny-model tests use it (``pytestmark = pytest.mark.usefixtures("torch_one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
