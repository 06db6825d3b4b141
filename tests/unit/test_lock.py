"""requirements.lock is current: it pins, with hashes, a version of every requirement that
pyproject.toml declares (core and every extra) inside the declared range, on every Python the
project supports; torch alone is installed by a step of its own (Makefile, Dockerfile)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
OWN_STEP = {"torch"}
PYTHONS = ["3.11", "3.12", "3.13"]


def lock_entries() -> list[tuple[str, Version, Marker | None, int]]:
    """(name, version, marker, number of hashes) of each pin in requirements.lock."""
    text = (REPO / "requirements.lock").read_text()
    out = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\\n]+))?", block)
        if m:
            marker = Marker(m.group(3).strip()) if m.group(3) else None
            out.append((canonicalize_name(m.group(1)), Version(m.group(2)), marker,
                        block.count("--hash=sha256:")))  # fmt: skip
    return out


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_every_pin_has_hashes() -> None:
    entries = lock_entries()
    assert len(entries) > 50
    assert [e[0] for e in entries if e[3] == 0] == []


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_satisfies_pyproject(python: str) -> None:
    env = {"python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_machine": "x86_64"}  # fmt: skip
    pins: dict[str, list[Version]] = {}
    for name, version, marker, _ in lock_entries():
        if marker is None or marker.evaluate(env):
            pins.setdefault(name, []).append(version)
    problems = []
    for req in declared():
        name = canonicalize_name(req.name)
        if name in OWN_STEP:
            assert name not in pins, f"{name} must not be in the lock (see Makefile)"
            continue
        got = pins.get(name, [])
        if len(got) != 1 or got[0] not in req.specifier:
            problems.append(f"{req}: lock has {[str(v) for v in got]}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)
