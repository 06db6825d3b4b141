"""Output paths from users must not escape the output root of a shared deployment."""

from __future__ import annotations

import os
from pathlib import Path

from sar2opt.errors import Sar2OptError

OUTPUT_ROOT_ENV = "SAR2OPT_OUTPUT_ROOT"


class PathEscapeError(Sar2OptError):
    """A user-given path resolves outside the configured output root."""


def resolve_output(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` resolved (symlinks too); if a root is set (argument or $SAR2OPT_OUTPUT_ROOT),
    relative paths are taken under it and any path that lands outside it is refused."""
    root = root if root is not None else os.environ.get(OUTPUT_ROOT_ENV) or None
    p = Path(path)
    if root is None:
        return p.resolve()
    root_r = Path(root).resolve()
    full = (p if p.is_absolute() else root_r / p).resolve()
    if full != root_r and root_r not in full.parents:
        raise PathEscapeError(f"output {path} is outside the output root {root_r}")
    return full
