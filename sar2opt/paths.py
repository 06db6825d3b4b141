"""Where jobs may write, and what they may replace: the one place for both rules.

* Containment: a path from a user must not escape the output root of a shared deployment
  (``$SAR2OPT_OUTPUT_ROOT``): ``resolve_output`` resolves ``..`` and symlinks first, so a
  symlink inside the root that points outside it is refused like ``../x``.
* Ownership: a job replaces (``--overwrite``) or deletes (``jobs/demo.py``) only an earlier
  sar2opt output of its own kind, recognised by what sar2opt writes into it: a Zarr store
  whose attributes carry sar2opt provenance (``sar2opt_stage``), a folder of such stores
  (multi-zone outputs), or a folder holding the marker file ``MARKER_FILE`` (folders that
  are not Zarr: evaluate, train, demo). Anything else (a user's file or folder) is refused
  and left untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from sar2opt.errors import Sar2OptError

OUTPUT_ROOT_ENV = "SAR2OPT_OUTPUT_ROOT"
#: Written into every folder output that is not a Zarr store: {"sar2opt_stage": kind, ...}.
MARKER_FILE = ".sar2opt-output.json"
#: The provenance attribute (``sar2opt.provenance``) that makes a Zarr store ours.
STAGE_ATTR = "sar2opt_stage"
#: Beside the stores of a multi-zone cube (``sar2opt.cube.tiled_build.ZONES_FILE``).
ZONES_FILE = "zones.json"

#: Output kinds (the ``sar2opt_stage`` of what the job writes) and how users know them.
KINDS = {
    "cube": "cube (jobs/build_cube.py)",
    "infer": "mosaic (jobs/infer_region.py)",
    "train": "training output (jobs/train.py)",
    "evaluate": "evaluation (jobs/evaluate.py)",
    "demo": "demo folder (jobs/demo.py)",
}


class PathEscapeError(Sar2OptError):
    """A user-given path resolves outside the configured output root."""


class NotOurOutputError(Sar2OptError, FileExistsError):
    """The output path holds something sar2opt did not write (or another job's output)."""


def output_root() -> Path | None:
    """The resolved ``$SAR2OPT_OUTPUT_ROOT``; None when unset (any path is allowed)."""
    root = os.environ.get(OUTPUT_ROOT_ENV) or None
    return Path(root).expanduser().resolve() if root else None


def resolve_output(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` resolved (``~``, ``..`` and symlinks); if a root is set (argument or
    $SAR2OPT_OUTPUT_ROOT), relative paths are taken under it and any path that does not land
    strictly inside it (outside, or the root itself) is refused."""
    root_r = Path(root).expanduser().resolve() if root is not None else output_root()
    p = Path(path).expanduser()
    if root_r is None:
        return p.resolve()
    full = (p if p.is_absolute() else root_r / p).resolve()
    if root_r not in full.parents:
        raise PathEscapeError(f"output {path} is outside the output root {root_r}")
    return full


def _store_stage(path: Path) -> str | None:
    """The ``sar2opt_stage`` of the Zarr store at ``path``; None if it is not a sar2opt store."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    stage = attrs.get(STAGE_ATTR) if isinstance(attrs, dict) else None
    return stage if isinstance(stage, str) else None


def output_kind(path: str | Path) -> str | None:
    """Which sar2opt output ``path`` is (a ``KINDS`` key, or another ``sar2opt_stage``), None
    when sar2opt did not write it. ``path`` is not followed if it is a symlink."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return None
    marker = p / MARKER_FILE
    if marker.is_file() and not marker.is_symlink():
        try:
            kind = json.loads(marker.read_text()).get(STAGE_ATTR)
        except (OSError, ValueError, AttributeError):
            return None
        return kind if isinstance(kind, str) else None
    stage = _store_stage(p)
    if stage is not None:
        return stage
    # A folder of zone stores (multi-zone cube or mosaic): ours only if every entry is ours.
    entries = [e for e in p.iterdir() if not _own_temp(e.name)]
    stages = {_store_stage(e) for e in entries if e.suffix == ".zarr" and not e.is_symlink()}
    others = [e for e in entries if e.suffix != ".zarr" and e.name != ZONES_FILE]
    if others or not stages or None in stages or len(stages) != 1:
        if not others and not stages and (p / ZONES_FILE).is_file():
            return "cube"  # a multi-zone cube killed before its first store was created
        return None
    return stages.pop()


def _own_temp(name: str) -> bool:
    """A store being created by the tiled build (``.<zone>.zarr.tmp-<pid>``)."""
    return name.startswith(".") and ".zarr.tmp-" in name


def check_replaceable(path: str | Path, kind: str) -> None:
    """Refuse, before any work, an existing ``path`` that is not an earlier sar2opt output of
    ``kind``: jobs replace (``--overwrite``) or resume only what they wrote themselves. An
    empty folder is fine (there is nothing to lose)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
        return
    found = output_kind(p)
    want = KINDS.get(kind, kind)
    if found is None:
        raise NotOurOutputError(
            f"output {p} exists and is not a sar2opt {want}: sar2opt replaces only its own "
            "outputs; choose another --out (nothing was changed)"
        )
    if found != kind:
        raise NotOurOutputError(
            f"output {p} is a sar2opt {KINDS.get(found, found)}, not a {want}: "
            "choose another --out (nothing was changed)"
        )


def claim_folder(path: str | Path, kind: str) -> Path:
    """Create the folder output ``path`` (checked with ``check_replaceable``) and mark it as a
    sar2opt output of ``kind``, so a later run may replace it and nothing else."""
    p = Path(path)
    check_replaceable(p, kind)
    p.mkdir(parents=True, exist_ok=True)
    marker = p / MARKER_FILE
    if not marker.is_file():
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        marker.write_text(json.dumps({STAGE_ATTR: kind, "created_utc": now}) + "\n")
    return p


def remove_own_output(path: str | Path, kind: str) -> None:
    """Delete ``path`` only if it is an earlier sar2opt output of ``kind`` (else refuse)."""
    import shutil

    p = Path(path)
    check_replaceable(p, kind)
    if p.is_dir() and any(p.iterdir()):
        shutil.rmtree(p)
