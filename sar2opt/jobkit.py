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

``entry`` is the contract: the dates a job was given (``--start``/``--end``/``--until``) are
checked before anything else (before a config is read or a catalog contacted); a user error
(``Sar2OptError``, also one raised in a Ray worker and wrapped by Ray; an unreadable catalog
asset; a full disk) is one ``error: ...`` line on stderr and exit code 2; anything else is a
bug and keeps its traceback; and the job leaves Ray as it found it (a Ray the job started,
through ``sar2opt.runtime.init_ray``, is shut down, whatever happens).

Outputs go through ``output_path`` (or ``sar2opt.paths`` directly): inside
$SAR2OPT_OUTPUT_ROOT when that is set, and never onto something sar2opt did not write.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import errno
import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from sar2opt import credentials
from sar2opt.config import Config, load_config
from sar2opt.errors import ConfigError, Sar2OptError, first_line
from sar2opt.paths import check_replaceable, resolve_output


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
    """The job's ``--set`` overrides, then ``--period`` as ``infer.period`` and ``--stac-url``
    as ``catalog.stac_url``; a catalog URL's credentials are kept in memory
    (``sar2opt.credentials``), never in the config."""
    sets = []
    for s in getattr(args, "set", None) or []:
        key, eq, value = s.partition("=")
        if eq and key.strip() == "catalog.stac_url":
            s = f"{key}={json.dumps(credentials.remember(_yaml_str(value)))}"
        sets.append(s)
    period = getattr(args, "period", None)
    if period is not None:
        sets.append(f"infer.period={json.dumps(period)}")
    url = getattr(args, "stac_url", None)
    if url:  # quoted: YAML reads it verbatim
        sets.append(f"catalog.stac_url={json.dumps(credentials.remember(url))}")
    return sets


def _yaml_str(raw: str) -> str:
    import yaml

    try:
        v = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return v if isinstance(v, str) else raw


def load_job_config(args: argparse.Namespace) -> Config:
    """``--config`` with ``overrides(args)`` applied (a URL with credentials in the config
    file is made public too)."""
    cfg = load_config(getattr(args, "config", None), overrides(args))
    public = credentials.remember(cfg.catalog.stac_url)
    if public != cfg.catalog.stac_url:
        cfg = dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, stac_url=public))
    return cfg


def output_path(args: argparse.Namespace, kind: str, attr: str = "out") -> Path:
    """``args.<attr>`` resolved inside $SAR2OPT_OUTPUT_ROOT (when set) and checked to be
    absent, an empty folder or an earlier sar2opt output of ``kind``
    (``sar2opt.paths.check_replaceable``): a job never replaces a user's files."""
    out = resolve_output(getattr(args, attr))
    check_replaceable(out, kind)
    return out


#: The date arguments a job may have, checked by ``entry`` before anything else.
DATE_ARGS = ("start", "end", "until")


class DateError(ConfigError):
    """A ``--start``/``--end``/``--until`` that is not a date, or a period that ends first."""


def _day(name: str, value: str) -> dt.date:
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError as e:
        raise DateError(f"--{name} {value!r} is not a date YYYY-MM-DD: {e}") from None


def check_dates(args: argparse.Namespace) -> None:
    """Every date argument parses, and ``--start`` is not after ``--end``."""
    days = {
        n: _day(n, str(getattr(args, n))) for n in DATE_ARGS if getattr(args, n, None) is not None
    }
    if "start" in days and "end" in days and days["start"] > days["end"]:
        raise DateError(f"--start {args.start} is after --end {args.end}: no day to search")


class DiskFullError(Sar2OptError):
    """A write failed for lack of space (or a file-size limit)."""


class AssetReadError(Sar2OptError):
    """A catalog asset (a COG) cannot be opened or read: missing, truncated, HTTP error."""


#: write errors that are the environment's, not a bug
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_FULL[errno.EFBIG] = "file size limit exceeded"
#: how stackstac names the asset it failed on
_STACKSTAC = re.compile(r"Error (?:opening|reading .*? from) '(?P<href>[^']+)': (?P<why>.*)$")


def _chain(exc: BaseException):
    """``exc`` and what caused it, through Ray's wrappers (a worker's error arrives as the
    ``cause`` of a RayTaskError, or as the cause/context of another)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError: the worker's original exception
        if isinstance(cause, BaseException) and id(cause) not in seen:
            e = cause  # (the wrapper itself is skipped: its message is Ray's traceback)
            continue
        yield e
        e = e.__cause__ or e.__context__


def _environment_error(chain: list[BaseException], out: object = None) -> Sar2OptError | None:
    """A full disk or an unreadable catalog asset found in ``chain``, as a user error;
    ``out``: the job's output, named when the failed write does not say which file."""
    for e in chain:
        if isinstance(e, OSError) and e.errno in _FULL:
            file = e.filename or out
            where = f" writing {file}" if file else ""
            return DiskFullError(f"{_FULL[e.errno]}{where}: free space or choose another --out")
    raster = [e for e in chain if type(e).__module__.startswith("rasterio")]
    if not raster:
        return None
    for e in chain:
        m = _STACKSTAC.search(first_line(e))
        if m:
            why = first_line(raster[-1])
            verb = "open" if first_line(e).startswith("Error opening") else "read"
            return AssetReadError(f"cannot {verb} asset {m['href']}: {why}")
    return AssetReadError(f"cannot read a catalog asset: {first_line(raster[-1])}")


def user_error(exc: BaseException, out: object = None) -> Sar2OptError | None:
    """The Sar2OptError behind ``exc`` (also behind Ray's wrappers), or a full disk (writing
    ``out``, unless the error names its file) or an unreadable catalog asset behind it, as
    one; None: a bug."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, Sar2OptError):
            return e
    return _environment_error(chain, out)


def _ray_up() -> bool:
    ray = sys.modules.get("ray")  # never imported: not started either
    return ray is not None and ray.is_initialized()


def entry(main: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a job's ``main(args) -> int`` in the exit contract (module docstring)."""

    @functools.wraps(main)
    def run(args: argparse.Namespace) -> int:
        ray_was_up = _ray_up()
        try:
            check_dates(args)  # first: a bad date must not wait for a catalog
            return main(args)
        except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; unwrap the user's
            err = user_error(e, getattr(args, "out", None) or getattr(args, "store", None))
            if err is None:
                raise
            print(f"error: {first_line(err)}", file=sys.stderr)
            return 2
        finally:
            if not ray_was_up and _ray_up():
                sys.modules["ray"].shutdown()

    return run
