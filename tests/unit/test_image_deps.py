"""The cluster image installs what the shipped jobs import: every third-party module that
jobs/*.py reach (directly or through sar2opt, lazy imports inside functions included) comes
from a distribution that pyproject declares in the core dependencies or in an extra the
Dockerfile installs, and that requirements.lock pins."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PKG = "sar2opt"
ENTRYPOINTS = sorted((REPO / "jobs").glob("*.py"))
# torch is installed by its own Dockerfile step (CPU or CUDA build), not from the lock
OWN_STEP = {"torch"}


def _module_file(name: str) -> Path | None:
    """The file of sar2opt module ``name`` (a package's __init__), or None if not one."""
    base = REPO.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every import in ``path``, at any depth (function bodies included)."""
    is_pkg = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                parts = module.split(".")
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # may be submodules
    return names


def runtime_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files (repo-relative) that import it."""
    seen: set[Path] = set()
    todo = [(p, p.stem) for p in ENTRYPOINTS]
    found: dict[str, set[str]] = {}
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top == PKG:
                # the module itself and every parent package (their __init__ runs too)
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    f = _module_file(".".join(parts[:i]))
                    if f is not None:
                        todo.append((f, ".".join(parts[:i])))
            elif top not in sys.stdlib_module_names and top != "__future__":
                if not (REPO / "jobs" / f"{top}.py").is_file():  # jobs importing each other
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _dockerfile_extras() -> set[str]:
    text = (REPO / "infra" / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*?\"?\.(?:\[([\w,\s-]*)\])?\"?\s", text)
    assert installs, "the Dockerfile installs no `.` package"
    return {canonicalize_name(e) for group in installs for e in group.split(",") if e.strip()}


def declared_for_image() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    extras = {canonicalize_name(k): v for k, v in project["optional-dependencies"].items()}
    wanted = _dockerfile_extras()
    assert wanted <= set(extras), f"the Dockerfile names unknown extras {wanted - set(extras)}"
    for e in wanted:
        reqs += extras[e]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def locked() -> set[str]:
    text = (REPO / "requirements.lock").read_text()
    return {canonicalize_name(m) for m in re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)}


def test_the_walk_finds_the_known_imports() -> None:
    """The walk sees module-level, function-level (lazy) and sub-package imports."""
    found = runtime_imports()
    assert {"ray", "torch", "zarr", "xarray", "numpy", "yaml"} <= set(found)
    assert "sar2opt/profiles.py" in found["planetary_computer"]  # imported inside sign_item


def test_every_runtime_import_is_declared_for_the_image() -> None:
    dists = packages_distributions()
    declared, pinned = declared_for_image(), locked()
    problems = []
    for top, where in sorted(runtime_imports().items()):
        names = {canonicalize_name(d) for d in dists.get(top, [])}
        if not names:
            problems.append(f"{top} (imported by {sorted(where)}): no installed distribution")
            continue
        if not names & declared:
            problems.append(
                f"{top} from {sorted(names)}: not in pyproject's dependencies or "
                f"the extras the Dockerfile installs (imported by {sorted(where)})"
            )
        if not names & (pinned | OWN_STEP):
            problems.append(f"{top} from {sorted(names)}: not pinned in requirements.lock")
    assert not problems, "\n".join(problems)
