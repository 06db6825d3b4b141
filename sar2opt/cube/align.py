"""Time alignment: pair each Sentinel-1 acquisition with Sentinel-2 acquisitions nearby in time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np


def pair_s1_s2(
    s1_times: Sequence[np.datetime64], s2_times: Sequence[np.datetime64], max_dt_days: float
) -> list[list[int]]:
    """For each S1 time, indices of S2 times within ±``max_dt_days``, nearest first.

    Ties (equal distance before and after) prefer the earlier S2 date.
    """
    s2 = np.asarray(s2_times, dtype="datetime64[s]")
    pairs = []
    for t in np.asarray(s1_times, dtype="datetime64[s]"):
        dt_days = (s2 - t).astype("float64") / 86400.0
        near = np.flatnonzero(np.abs(dt_days) <= max_dt_days)
        order = sorted(near, key=lambda i: (abs(dt_days[i]), dt_days[i]))
        pairs.append([int(i) for i in order])
    return pairs


def composite_nearest_clear(
    opt: np.ndarray,
    clear: np.ndarray,
    order: Sequence[int],
    *,
    out: np.ndarray | None = None,
    ok: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, the first clear S2 observation in ``order`` (nearest in time first).

    opt (time, band, y, x), clear (time, y, x) boolean. Returns (composite (band, y, x) with
    NaN where no clear pixel, clear (y, x) boolean, source (y, x) int: index into ``opt``'s
    time axis of the pixel used, -1 where none). ``out`` and ``ok`` (optional) receive the
    composite and the clear flag in place (e.g. slices of a cube block).
    """
    dates = ((i, opt[i], clear[i]) for i in order)
    return composite_first_clear(dates, opt.shape[1:], out=out, ok=ok)


#: One S2 date as the per-pixel rules take it: (its index, reflectance (band, y, x), clear
#: (y, x) boolean). The rules take dates nearest first from an iterable and stop asking once
#: every pixel is decided, so a lazy one (``build.clean_dates``) reads only the dates needed.
Date = tuple[int, np.ndarray, np.ndarray]


def composite_first_clear(
    dates: Iterable[Date],
    shape: Sequence[int],
    *,
    out: np.ndarray | None = None,
    ok: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``composite_nearest_clear`` over ``dates`` taken in turn (nearest first), (band, y, x)
    ``shape``: the next date is taken only while some pixel has no clear observation yet."""
    nb, h, w = shape
    if out is None:
        out = np.empty((nb, h, w), dtype="float32")
    out[...] = np.nan
    taken = np.zeros((h, w), dtype=bool)
    source = np.full((h, w), -1, dtype="int16")
    for i, opt_i, clear_i in dates:
        take = clear_i & ~taken
        np.copyto(out, opt_i, where=take)
        np.copyto(source, np.int16(i), where=take)
        taken |= take
        if taken.all():  # every pixel has its nearest clear observation
            break
    if ok is not None:
        ok[...] = taken
    return out, taken, source


def pair_prior(
    s1_times: Sequence[np.datetime64],
    s2_times: Sequence[np.datetime64],
    max_dt_days: float,
    prior_days: float,
) -> list[list[int]]:
    """For each S1 time, S2 indices strictly before ``t - max_dt_days`` and no earlier than
    ``t - max_dt_days - prior_days``, most recent first: the prior cloud-free optical input,
    kept disjoint from the ±``max_dt_days`` target window."""
    s2 = np.asarray(s2_times, dtype="datetime64[s]")
    out = []
    for t in np.asarray(s1_times, dtype="datetime64[s]"):
        before_days = (t - s2).astype("float64") / 86400.0  # > 0: S2 earlier than S1
        ok = (before_days > max_dt_days) & (before_days <= max_dt_days + prior_days)
        idx = np.flatnonzero(ok)
        out.append([int(i) for i in sorted(idx, key=lambda i: (before_days[i], i))])
    return out


def prior_optical(
    opt: np.ndarray,
    clear: np.ndarray,
    s2_times: Sequence[np.datetime64],
    time: np.datetime64,
    max_dt_days: float,
    prior_days: float,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The prior clear optical of the date ``time``: (band, y, x), per pixel the latest clear
    observation of ``opt`` (S2 item, band, y, x; ``clear`` (S2 item, y, x), ``s2_times`` its
    dates) strictly before ``time - max_dt_days`` and at most ``prior_days`` before that
    (``pair_prior``), NaN where there is none.

    The one rule for the prior: the cube build writes it into ``prior_<band>``
    (``build.compose``) and the inference reader feeds it to SO/SOD models
    (``build.read_prior``, date by date through ``prior_first_clear``), so a model sees at
    inference what it was trained on."""
    dates = lambda order: ((i, opt[i], clear[i]) for i in order)  # noqa: E731
    return prior_first_clear(dates, opt.shape[1:], s2_times, time, max_dt_days, prior_days, out=out)


def prior_first_clear(
    dates: Callable[[Sequence[int]], Iterable[Date]],
    shape: Sequence[int],
    s2_times: Sequence[np.datetime64],
    time: np.datetime64,
    max_dt_days: float,
    prior_days: float,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``prior_optical`` of (band, y, x) ``shape`` with its S2 dates from ``dates(order)``
    (``order``: indices into ``s2_times``, latest first), taken one at a time until every
    pixel has a clear one: a lazy ``dates`` (``build.clean_dates``) reads no date past that."""
    (order,) = pair_prior([time], s2_times, max_dt_days, prior_days)
    return composite_first_clear(dates(order), shape, out=out)[0]


def same_date_optical(
    opt: np.ndarray,
    clear: np.ndarray,
    order: Sequence[int],
    *,
    out: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The same-date S2 of a time step, clouds included: per pixel the first observation in
    ``order`` (the ±``max_dt_days`` window, nearest first: ``pair_s1_s2``) that has every
    band, *not* composited from clear pixels.

    opt (S2 item, band, y, x), clear (S2 item, y, x) boolean (``build.clear_mask``). Returns
    (reflectance (band, y, x), NaN where no observation; cloud mask (y, x) float32, 1 where
    that observation is not clear by ``clear`` (cloud, shadow) or there is none, 0 where it
    is clear). ``out`` and ``mask`` (optional) receive them in place.

    The one rule for the cloud-removal input: the cube build writes it into ``cloudy_<band>``
    and ``cloud_mask`` (``build.compose``), the inference reader feeds it to SC/SCO/SCOD
    models (``build.read_cloudy``). Where the mask is 0 the value is the clear pixel the
    target composite (``composite_nearest_clear``) takes too: the nearest clear one.
    """
    dates = ((i, opt[i], clear[i]) for i in order)
    return same_date_first(dates, opt.shape[1:], out=out, mask=mask)


def same_date_first(
    dates: Iterable[Date],
    shape: Sequence[int],
    *,
    out: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``same_date_optical`` over ``dates`` taken in turn (nearest first), (band, y, x)
    ``shape``: the next date is taken only while some pixel has no observation yet."""
    nb, h, w = shape
    if out is None:
        out = np.empty((nb, h, w), dtype="float32")
    if mask is None:
        mask = np.empty((h, w), dtype="float32")
    out[...] = np.nan
    seen = np.zeros((h, w), dtype=bool)
    clear_at = np.zeros((h, w), dtype=bool)
    for _, opt_i, clear_i in dates:  # one image at a time: no stack-sized temporaries
        take = np.isfinite(opt_i).all(axis=0) & ~seen
        np.copyto(out, opt_i, where=take)
        clear_at |= take & clear_i
        seen |= take
        if seen.all():  # every pixel has its nearest observation
            break
    mask[...] = ~clear_at
    return out, mask
