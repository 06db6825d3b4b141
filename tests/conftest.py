"""Shared fixtures: where the real data lives, and a throw-away local Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
MULTIEARTH = SHARED_DATA / "multiearth_sample"

requires_shared_data = pytest.mark.skipif(
    not MULTIEARTH.is_dir(), reason=f"real sample not found at {MULTIEARTH}"
)


@pytest.fixture(scope="session")
def short_tmp():
    """Ray's socket paths must stay short: a temp dir directly under /tmp."""
    d = tempfile.mkdtemp(prefix="s2o-", dir="/tmp")
    yield Path(d)


@pytest.fixture(autouse=True, scope="session")
def _isolated_ray_env():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
