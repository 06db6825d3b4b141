"""Provenance saved with every cube, checkpoint and mosaic: git SHA, config, time."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import sar2opt


def git_sha() -> str:
    """SHA of the checkout the package runs from ('unknown' outside git), '+dirty' if modified."""
    root = Path(sar2opt.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(stage: str) -> dict:
    """Common attrs: which code produced this, and when."""
    return {
        "sar2opt_stage": stage,
        "sar2opt_version": sar2opt.__version__,
        "git_sha": git_sha(),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
