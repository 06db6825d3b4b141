"""Output periods: the time axis of a period mosaic, and the per-pixel rule that picks, inside
one period, the best evidence among its acquisitions.

Over a region as large as the Amazon one Sentinel-1 acquisition covers a ~250-km swath, so a
mosaic with one time step per acquisition is mostly empty at every step. A period mosaic has
one time step per period (``12D``, ``2W``, ``1M``, or explicit edges): every pixel takes the
best observation inside the period and records which (``source``) and when (``obs_time``).

Periods lie on a fixed lattice (days and weeks counted from 1970-01-01, months and years on
the calendar), not on the run's ``--start``: a monitoring run that appends next month finds
the same periods as the run that made the store. ``acquisition`` keeps one time step per S1
acquisition (the layout before periods).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sar2opt.errors import ConfigError
from sar2opt.infer.composite import NO_RANK

#: ``--period`` value that keeps one time step per S1 acquisition.
ACQUISITION = "acquisition"
#: Where day and week periods are counted from (independent of any run's dates).
DAY_ANCHOR = np.datetime64("1970-01-01", "D")
_DURATION = re.compile(r"^\s*(\d+)\s*([DWMY])\s*$", re.IGNORECASE)
DAY = np.timedelta64(1, "D")


class PeriodError(ConfigError):
    """A ``--period`` that is not a duration, or period edges that are not in order."""


@dataclass(frozen=True)
class Period:
    """One output time step: days ``start`` (inclusive) to ``end`` (exclusive)."""

    start: np.datetime64
    end: np.datetime64

    @property
    def ref(self) -> np.datetime64:
        """The reference instant (the middle): among equal evidence the nearest wins."""
        start = self.start.astype("datetime64[s]")
        return start + (self.end.astype("datetime64[s]") - start) // 2

    @property
    def label(self) -> str:
        """The time coordinate written for the period (its first day, ISO)."""
        return f"{self.start}T00:00:00Z"

    def contains(self, t: np.datetime64 | str) -> bool:
        t = _when(t)
        return bool(self.start <= t < self.end)


@dataclass(frozen=True)
class PeriodSpec:
    """A period length (``count`` days, weeks, months or years) or explicit ``edges``."""

    count: int = 0
    unit: str = ""  # "D", "W", "M", "Y"
    edges: tuple[np.datetime64, ...] = ()

    def __str__(self) -> str:
        if self.edges:
            return "edges " + ", ".join(str(e) for e in self.edges)
        return f"{self.count}{self.unit}"


def _day(text: str, where: str) -> np.datetime64:
    try:
        return np.datetime64(str(text)[:10], "D")
    except ValueError:
        raise PeriodError(f"{where}: {text!r} is not a date YYYY-MM-DD") from None


def parse_period(text: str | None = None, edges: Sequence[str] = ()) -> PeriodSpec | None:
    """``--period`` (``12D``, ``2W``, ``1M``, ``1Y``; ``acquisition``: None) or explicit edges
    (at least two dates, strictly increasing: each pair is one period)."""
    if edges:
        days = tuple(_day(e, "infer.period_edges") for e in edges)
        if len(days) < 2:
            raise PeriodError("infer.period_edges needs at least two dates (one period)")
        for a, b in zip(days, days[1:], strict=False):
            if not a < b:
                raise PeriodError(f"infer.period_edges out of order: {a} is not before {b}")
        return PeriodSpec(edges=days)
    if text is None or text.strip().lower() == ACQUISITION:
        return None
    m = _DURATION.match(text)
    if not m or int(m.group(1)) < 1:
        raise PeriodError(
            f"--period (infer.period) {text!r} is not a duration: a count and a unit, e.g. 12D, "
            "2W, 1M, 1Y "
            f"(or {ACQUISITION!r} for one time step per S1 acquisition)"
        )
    return PeriodSpec(int(m.group(1)), m.group(2).upper())


def _month(year: int, month0: int) -> np.datetime64:
    return np.datetime64(f"{year + month0 // 12:04d}-{month0 % 12 + 1:02d}-01", "D")


def periods_between(spec: PeriodSpec, first: str, last: str) -> list[Period]:
    """The periods of ``spec`` that share a day with ``first``..``last`` (ISO days, both
    inclusive), in order."""
    lo, hi = _day(first, "start"), _day(last, "end")
    if hi < lo:
        raise PeriodError(f"the run ends ({hi}) before it starts ({lo})")
    if spec.edges:
        e = spec.edges
        return [Period(a, b) for a, b in zip(e, e[1:], strict=False) if a <= hi and b > lo]
    if spec.unit in ("D", "W"):
        n = spec.count * (7 if spec.unit == "W" else 1)
        k = int((lo - DAY_ANCHOR) // (n * DAY))
        out = []
        start = DAY_ANCHOR + k * n * DAY
        while start <= hi:
            out.append(Period(start, start + n * DAY))
            start = start + n * DAY
        return out
    n = spec.count * (12 if spec.unit == "Y" else 1)  # months
    m_lo = (int(str(lo)[:4]) - 1970) * 12 + int(str(lo)[5:7]) - 1
    m = m_lo - m_lo % n
    out = []
    while _month(1970, m) <= hi:
        out.append(Period(_month(1970, m), _month(1970, m + n)))
        m += n
    return out


def assign(times_iso: Sequence[str], periods: Sequence[Period]) -> list[list[int]]:
    """Per period, the indices of the acquisitions (``times_iso``) inside it, in time order;
    an acquisition outside every period is in none."""
    t = np.array([_when(s) for s in times_iso], "datetime64[s]")
    out = []
    for p in periods:
        inside = np.flatnonzero((t >= p.start) & (t < p.end))
        out.append(sorted(inside.tolist(), key=lambda i: (t[i], i)))
    return out


def provisional(period: Period, searched_until: str) -> bool:
    """Whether the period can still gain acquisitions: it ends after the last day searched
    (the monitor refreshes it on its next run)."""
    return bool(period.end > _day(searched_until, "end") + DAY)


@dataclass(frozen=True)
class TimeSteps:
    """What one time step of a store is: an S1 acquisition (``spec`` None; its label is the
    acquisition's ISO time) or a period of ``spec`` (its label is ``Period.label``). The
    fill asks it for the ledger keys, the S2 items and the reference instant of a step."""

    spec: PeriodSpec | None

    def period(self, label: str) -> Period:
        """The period whose label is ``label``."""
        if self.spec is None:
            raise ValueError("one time step per acquisition has no periods")
        day = label[:10]
        (p,) = [p for p in periods_between(self.spec, day, day) if str(p.start) == day]
        return p

    def search_from(self, start: str, end: str) -> str:
        """The first day whose acquisitions a run from ``start`` to ``end`` uses: ``start``,
        or the first day of the period holding it (periods are filled whole)."""
        if self.spec is None:
            return start
        periods = periods_between(self.spec, start, end)
        return str(periods[0].start) if periods else start

    def ledger_keys(
        self,
        times: Sequence[str],
        t_indices: Sequence[int],
        acquisitions: Sequence[Sequence[tuple[str, Sequence[dict]]]],
    ) -> list[str]:
        """The ledger's time key of every time step (``times`` order): the label, and for a
        period also which acquisitions made it, so a period that gains one (the monitor's
        refresh of the period in progress) is written again whole, while a run killed while
        writing it resumes where it stopped."""
        keys = list(times)
        if self.spec is None:
            return keys
        for t, acqs in zip(t_indices, acquisitions, strict=True):
            ids = sorted(str(it.get("id", "")) for _, frames in acqs for it in frames)
            digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
            keys[t] = f"{times[t]}@{len(acqs)}-{digest}"
        return keys

    def s2_items(self, items: Sequence[dict], label: str, max_dt_days: float) -> list[dict]:
        """The S2 items a time step composites: within ±``max_dt_days`` of the acquisition,
        or inside the period."""
        if self.spec is None:
            from sar2opt.stac import items_near

            return items_near(items, label, max_dt_days)
        p = self.period(label)
        return [it for it in items if p.contains(_when(it["properties"]["datetime"]))]

    def reference_seconds(self, label: str) -> int:
        """The instant the nearest evidence is measured from (``obs_seconds``)."""
        return obs_seconds(label if self.spec is None else self.period(label).ref)

    @property
    def s2_max_dt_days(self) -> float | None:
        """How far a clear S2 pixel may be from the reference (None: the composite's own
        ±days; a period: anywhere inside it, its items are already the period's)."""
        return None if self.spec is None else float("inf")


def _when(t: np.datetime64 | str) -> np.datetime64:
    """``t`` as naive UTC datetime64[s] (ISO strings may carry an offset or 'Z')."""
    if isinstance(t, np.datetime64):
        return t.astype("datetime64[s]")
    import pandas as pd

    ts = pd.Timestamp(str(t))
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.floor("s").to_datetime64(), "s")


# ---------------------------------------------------------------------------------------------
# the per-pixel rule

#: ``obs_time`` is stored as whole seconds since this instant (int32 lasts to 2082); -1: none.
OBS_EPOCH = np.datetime64("2014-01-01T00:00:00", "s")
OBS_NONE = -1


def obs_seconds(t: np.datetime64 | str) -> int:
    """An observation time (ISO with any offset, or datetime64: UTC) as ``obs_time``
    stores it, in whole seconds."""
    return int((_when(t) - OBS_EPOCH) // np.timedelta64(1, "s"))


class BestEvidence:
    """The best evidence so far for each pixel of one block in one period, folded one
    candidate at a time (memory: one block, however many acquisitions the period holds).

    A candidate pixel wins when its ``rank`` is lower (better evidence: e.g. real clear S2
    before synthesis), or equal with an observation strictly nearer the period's reference
    instant; on a tie the earlier candidate stays. Pixels a candidate has no data for
    (``rank`` >= ``NO_RANK``) never win.

    Swath borders are feathered: a candidate may carry a ``weight`` (H, W) in [0, 1] that
    ramps from 0 at the edge of its swath to 1 a feather width inside (``edge_weight``).
    Where two candidates of equal rank overlap, the pixel is their blend: the winner's
    share is its weight, so the image passes smoothly from one pass to the next instead of
    jumping where the nearer pass's swath ends. ``source``, ``obs_time`` and ``rank`` are
    the dominant candidate's (share >= 0.5).
    """

    NO_RANK = NO_RANK

    def __init__(self, bands: int, shape: tuple[int, int]) -> None:
        self.optical = np.full((bands, *shape), np.nan, np.float32)
        self.source = np.zeros(shape, np.uint8)
        self.uncertainty = np.full(shape, np.nan, np.float32)
        self.obs_time = np.full(shape, OBS_NONE, np.int32)
        self.rank = np.full(shape, self.NO_RANK, np.uint8)
        self.dist_s = np.full(shape, np.iinfo(np.int64).max, np.int64)
        self.weight = np.zeros(shape, np.float32)  # how far inside its swath the held one is

    def offer(
        self,
        optical: np.ndarray,
        source: np.ndarray,
        uncertainty: np.ndarray,
        obs_time: np.ndarray | int,
        rank: np.ndarray,
        ref_s: int,
        weight: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fold one candidate in: (C, H, W) optical, (H, W) source, uncertainty and rank,
        ``obs_time`` per pixel or one value (``obs_seconds``); ``ref_s`` the period's
        reference in the same seconds; ``weight`` its edge weight (None: 1 everywhere, no
        feathering). Returns where it became the dominant evidence."""
        shape = self.source.shape
        obs = np.broadcast_to(np.asarray(obs_time, np.int64), shape)
        rank = np.asarray(rank, np.uint8)
        dist = np.abs(obs - int(ref_s))
        w = np.ones(shape, np.float32) if weight is None else np.asarray(weight, np.float32)
        valid = rank < self.NO_RANK
        better = valid & (rank < self.rank)  # also where nothing is held yet
        same = valid & (rank == self.rank)
        nearer = same & (dist < self.dist_s)
        # where both are of equal rank, each weighs its edge weight, the farther one only in
        # what the nearer one leaves: (w_near, (1 - w_near) * w_far), normalised. Inside the
        # nearer swath that is the nearer pass alone; towards its edge the farther one takes
        # over; where both swaths end together they share.
        w_old = self.weight
        near_w = np.where(nearer, w, w_old)
        far_w = (1.0 - near_w) * np.where(nearer, w_old, w)
        total = near_w + far_w
        new_w = np.where(nearer, near_w, far_w)
        with np.errstate(invalid="ignore", divide="ignore"):
            mixed = np.where(total > 0, new_w / total, np.where(nearer, 1.0, 0.0))
        share = np.where(better, 1.0, np.where(same, mixed, 0.0)).astype(np.float32)
        mix = same & (share > 0)
        if mix.any():
            new = np.asarray(optical, np.float32)
            a = share[mix]
            self.optical[:, mix] = a * new[:, mix] + (1 - a) * self.optical[:, mix]
            unc = np.broadcast_to(np.asarray(uncertainty, np.float32), shape)
            self.uncertainty[mix] = a * unc[mix] + (1 - a) * self.uncertainty[mix]
            self.weight[mix] = np.maximum(self.weight[mix], w[mix])
        take = better | (mix & (share >= 0.5))
        if better.any():
            np.copyto(self.optical, np.asarray(optical, np.float32), where=better[None])
            self.uncertainty[better] = np.broadcast_to(np.asarray(uncertainty, np.float32), shape)[
                better
            ]
            self.weight[better] = w[better]
        if take.any():
            self.source[take] = np.asarray(source, np.uint8)[take]
            self.obs_time[take] = obs[take]
            self.rank[take] = rank[take]
            self.dist_s[take] = dist[take]
        return take

    def feather_over(self, under: BestEvidence, keep: np.ndarray) -> None:
        """Let ``under`` (the evidence beneath this one: the synthesis under real clear S2)
        show through where ``keep`` (H, W, in [0, 1]) is below 1: the optical and the
        uncertainty become keep x this + (1 - keep) x under; ``source``, ``obs_time`` and the
        rank are the dominant one's (this one while keep >= 0.5). Where this holds nothing,
        ``under`` wholly; where ``under`` holds nothing, this one as it is. Pixels with keep 1
        stay bit-identical (cloud-mask edges: ``run.offer_clear_s2``)."""
        held, has = self.rank < self.NO_RANK, under.rank < self.NO_RANK
        k = np.where(held, np.clip(np.asarray(keep, np.float32), 0, 1), np.float32(0))
        mix = has & (k < 1)
        part = mix & held
        if part.any():
            a = k[part]
            self.optical[:, part] = a * self.optical[:, part] + (1 - a) * under.optical[:, part]
            self.uncertainty[part] = a * self.uncertainty[part] + (1 - a) * under.uncertainty[part]
        whole = mix & ~held
        self.optical[:, whole] = under.optical[:, whole]
        self.uncertainty[whole] = under.uncertainty[whole]
        under_wins = mix & (k < 0.5)
        for name in ("source", "obs_time", "rank", "dist_s", "weight"):
            getattr(self, name)[under_wins] = getattr(under, name)[under_wins]

    def settled(self, rank: int) -> bool:
        """Whether every pixel already has evidence better than ``rank`` (a candidate of that
        rank cannot win anywhere: the caller may skip reading and predicting it)."""
        return bool((self.rank < rank).all())


def edge_weight(valid: np.ndarray, feather_px: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 0 outside ``valid`` and at its edge, rising to 1 about
    ``feather_px`` pixels inside (twice the valid fraction of the surrounding
    (2 f + 1)^2 box, minus one). The array's own border is not an edge (replicated)."""
    from sar2opt.ops import box_sum

    valid = np.asarray(valid, bool)
    if feather_px <= 0:
        return valid.astype(np.float32)
    f = int(feather_px)
    padded = np.pad(valid.astype(np.float32), f, mode="edge")
    frac = box_sum(padded, 2 * f + 1, dtype="float32") / np.float32((2 * f + 1) ** 2)
    return np.where(valid, np.clip(2 * frac - 1, 0, 1), 0).astype(np.float32)
