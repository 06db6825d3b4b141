"""What every job in ``jobs/`` shares: its common arguments and its exit contract.

    def parse_args(argv=None):
        p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        jobkit.add_config_args(p)
        jobkit.add_stac_url_arg(p)
        ...
        return p.parse_args(argv)

    @jobkit.entry
    def main(args) -> int:
        cfg = jobkit.load_job_config(args)
        ...

``entry`` is the contract: a user error (``Sar2OptError``, also one raised in a Ray worker
and wrapped by Ray) is one ``error: ...`` line on stderr and exit code 2; anything else is a
bug and keeps its traceback; and the job leaves Ray as it found it (a Ray the job started,
through ``sar2opt.runtime.init_ray``, is shut down, whatever happens).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sar2opt.config import Config, load_config
from sar2opt.errors import Sar2OptError, first_line


def add_config_args(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    """``--config`` (YAML, see jobs/configs/) and repeatable ``--set SECTION.KEY=VALUE``."""
    if config:
        p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override"
    )


def add_stac_url_arg(p: argparse.ArgumentParser) -> None:
    """``--stac-url``: the STAC API to search (overrides ``catalog.stac_url``)."""
    p.add_argument("--stac-url", help="STAC API endpoint (overrides catalog.stac_url)")


def add_aoi_args(
    p: argparse.ArgumentParser,
    *,
    aoi_help: str = "GeoJSON Polygon/MultiPolygon in lon/lat",
    dates: bool = True,
) -> None:
    """``--aoi`` and, with ``dates``, ``--start``/``--end`` (YYYY-MM-DD)."""
    p.add_argument("--aoi", required=True, help=aoi_help)
    if dates:
        p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
        p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")


def add_out_arg(
    p: argparse.ArgumentParser,
    help: str,
    default: str | None = None,
    *,
    dry_run_help: str | None = None,
) -> None:
    """``--out`` (a Path; required unless ``default``); jobs resolve it with
    ``sar2opt.paths.resolve_output`` (inside $SAR2OPT_OUTPUT_ROOT when set). With
    ``dry_run_help``, also ``--overwrite`` and ``--dry-run`` (what it prints)."""
    p.add_argument("--out", required=default is None, default=default, type=Path, help=help)
    if dry_run_help:
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")
        p.add_argument("--dry-run", action="store_true", help=dry_run_help)


def add_infer_args(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """What both inference jobs take: ``--checkpoint`` (repeatable: an ensemble) and
    ``--executor``."""
    p.add_argument("--checkpoint", required=True, action="append", help=checkpoint_help)
    p.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray Data actor pool (default); local: in this process (tiny AOIs, tests)",
    )


def overrides(args: argparse.Namespace) -> list[str]:
    """The job's ``--set`` overrides, then ``--stac-url`` as ``catalog.stac_url``."""
    sets = list(getattr(args, "set", None) or [])
    url = getattr(args, "stac_url", None)
    if url:
        sets.append(f"catalog.stac_url={json.dumps(url)}")  # quoted: YAML reads it verbatim
    return sets


def load_job_config(args: argparse.Namespace) -> Config:
    """``--config`` with ``overrides(args)`` applied."""
    return load_config(getattr(args, "config", None), overrides(args))


def user_error(exc: BaseException) -> Sar2OptError | None:
    """The Sar2OptError behind ``exc``, also behind Ray's wrappers (a worker's error arrives
    as the ``cause`` of a RayTaskError, or as the cause/context of another); None: a bug."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError: the worker's original exception
        if isinstance(cause, BaseException) and id(cause) not in seen:
            e = cause
            continue
        if isinstance(e, Sar2OptError):
            return e
        e = e.__cause__ or e.__context__
    return None


def _ray_up() -> bool:
    ray = sys.modules.get("ray")  # never imported: not started either
    return ray is not None and ray.is_initialized()


def entry(main: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a job's ``main(args) -> int`` in the exit contract (module docstring)."""

    @functools.wraps(main)
    def run(args: argparse.Namespace) -> int:
        ray_was_up = _ray_up()
        try:
            return main(args)
        except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; unwrap the user's
            err = user_error(e)
            if err is None:
                raise
            print(f"error: {first_line(err)}", file=sys.stderr)
            return 2
        finally:
            if not ray_was_up and _ray_up():
                sys.modules["ray"].shutdown()

    return run
