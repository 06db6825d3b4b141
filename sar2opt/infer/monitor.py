"""Monitoring: which Sentinel-1 acquisitions an existing mosaic store still lacks.

``jobs/monitor.py`` appends the acquisitions newer than a store's last time step. The rules
here are pure (strings in, strings out) so the resume and "up to date" cases are tested on
real timestamps. An append is made crash-safe in three commits: the times to do are written
to the store's ``PENDING_ATTR`` first, then the time axis grows (``store.append_times``,
whose commit is ``TIMES_ATTR``), then the blocks are filled (the ledger), and only then is
``PENDING_ATTR`` cleared. A run killed anywhere is finished by the next one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from sar2opt.errors import ConfigError, first_line
from sar2opt.infer.periods import TimeSteps, assign, periods_between
from sar2opt.infer.store import PENDING_ATTR, PROVISIONAL_ATTR, S1_IDS_ATTR, TIMES_ATTR


def _ts(iso: str) -> pd.Timestamp:
    t = pd.Timestamp(iso)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")


def store_config(recorded: Mapping, config_path: str | Path | None, overrides: Sequence[str]):
    """The run's ``Config``: ``config_path`` if given, else the one the store recorded; then
    ``overrides``. Starting from the recorded one means a plain ``monitor`` repeats exactly
    the settings of the run that made the store."""
    import tempfile

    import yaml

    from sar2opt.config import load_config

    if config_path is not None:
        return load_config(config_path, list(overrides))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(dict(recorded), f)
        f.flush()
        try:
            load_config(f.name)
        except ConfigError as e:
            raise ConfigError(
                f"the store's recorded config no longer loads ({first_line(e)}); pass --config"
            ) from None
        return load_config(f.name, list(overrides))


def search_start(zones: Sequence[Mapping]) -> str:
    """Where to search from: the earliest pending time of any zone, else the earliest last
    time step (zones hold the same times, unless a run died between two zones)."""
    starts = []
    for attrs in zones:
        pending = list(attrs.get(PENDING_ATTR) or [])
        times = list(attrs[TIMES_ATTR])
        starts.append(min(pending, key=_ts) if pending else times[-1])
    return min(starts, key=_ts)


def times_to_do(
    found: Sequence[str], zone_times: Sequence[str], pending: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(times to fill, times to append first) for one zone store.

    ``found``: acquisition times (ISO) the catalog returned from ``search_start`` on;
    ``zone_times``: the store's ``TIMES_ATTR``; ``pending``: its unfinished appended times.
    Only acquisitions strictly after the store's last time step are new (an acquisition
    that turns up later with an older date would break the sorted time axis: it is left out).
    Both come in time order, each once (the time axis stays sorted).
    """
    last = _ts(zone_times[-1]) if zone_times else None
    new = sorted((t for t in found if last is None or _ts(t) > last), key=_ts)
    todo: list[str] = []
    for t in sorted([*pending, *new], key=_ts):
        if t not in todo:
            todo.append(t)
    to_append = [t for t in todo if t not in set(zone_times)]
    return todo, to_append


def period_search_start(steps: TimeSteps, zones: Sequence[Mapping]) -> str:
    """Where a period mosaic's monitor searches from: the first day of the earliest period
    still open in any zone (pending, or provisional: it may have gained acquisitions), else
    the day after the last period."""
    days = []
    for attrs in zones:
        open_ = [*(attrs.get(PENDING_ATTR) or []), *(attrs.get(PROVISIONAL_ATTR) or [])]
        if open_:
            days.append(min(str(steps.period(label).start) for label in open_))
        else:
            days.append(str(steps.period(attrs[TIMES_ATTR][-1]).end))
    return min(days)


def periods_to_do(
    steps: TimeSteps,
    found: Mapping[str, Sequence[Mapping]],
    zone: Mapping,
    since: str,
    until: str,
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(periods to fill, of them the ones to append first, the acquisitions of each) for one
    zone store of a period mosaic.

    ``found``: the acquisitions (ISO -> frames) from ``since`` to ``until``; ``zone``: the
    store's attributes. A period is filled when it is new, pending (a killed run), or
    provisional with other frames than it was made from (so a period that gained a pass is
    written again whole; one that did not costs nothing). Final periods are never touched.
    """
    if since > until:
        return [], [], {}
    times = list(zone[TIMES_ATTR])
    made_from = list(zone.get(S1_IDS_ATTR) or [])
    pending = set(zone.get(PENDING_ATTR) or [])
    open_ = set(zone.get(PROVISIONAL_ATTR) or [])
    isos = sorted(found, key=_ts)
    periods = periods_between(steps.spec, since, until)
    todo, acqs = [], {}
    for p, inside in zip(periods, assign(isos, periods), strict=True):
        label = p.label
        acqs[label] = [isos[i] for i in inside]
        ids = sorted(str(it["id"]) for i in inside for it in found[isos[i]])
        if label not in times or label in pending:
            todo.append(label)
        elif label in open_ and sorted(map(str, made_from[times.index(label)])) != ids:
            todo.append(label)
    return todo, [t for t in todo if t not in set(times)], acqs


def until_day(arg: str | None) -> str:
    """The last day to search: ``arg`` (YYYY-MM-DD) checked, or today (UTC)."""
    if arg is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(arg).isoformat()
    except ValueError:
        raise ConfigError(f"--until must be a date YYYY-MM-DD, got {arg!r}") from None
