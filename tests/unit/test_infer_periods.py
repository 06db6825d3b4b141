"""Output periods (parse, lattice, assignment, provisional) and the per-pixel best-evidence
fold of a period mosaic, on numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr

from sar2opt.infer.periods import (
    OBS_NONE,
    BestEvidence,
    Period,
    PeriodError,
    TimeSteps,
    assign,
    edge_weight,
    obs_seconds,
    parse_period,
    periods_between,
    provisional,
)
from tests.helpers.infer_fakes import GRID, META, NORM, RF, H, W, fake_sar, tiny_net


def days(ps: list[Period]) -> list[tuple[str, str]]:
    return [(str(p.start), str(p.end)) for p in ps]


def test_month_periods_are_calendar_months_covering_the_run() -> None:
    spec = parse_period("1M")
    assert days(periods_between(spec, "2023-06-20", "2023-08-01")) == [
        ("2023-06-01", "2023-07-01"),
        ("2023-07-01", "2023-08-01"),
        ("2023-08-01", "2023-09-01"),
    ]
    # quarters start in January, April, July, October whatever the run's start
    q = periods_between(parse_period("3m"), "2023-05-15", "2024-01-02")
    assert days(q) == [
        ("2023-04-01", "2023-07-01"),
        ("2023-07-01", "2023-10-01"),
        ("2023-10-01", "2024-01-01"),
        ("2024-01-01", "2024-04-01"),
    ]
    assert days(periods_between(parse_period("1Y"), "2023-12-31", "2024-01-01")) == [
        ("2023-01-01", "2024-01-01"),
        ("2024-01-01", "2025-01-01"),
    ]


def test_day_periods_lie_on_one_lattice_whatever_the_start() -> None:
    """A monitoring run started later finds the periods the first run wrote."""
    a = periods_between(parse_period("12D"), "2023-07-01", "2023-07-31")
    b = periods_between(parse_period("12D"), "2023-07-20", "2023-08-20")
    assert all((p.end - p.start) == np.timedelta64(12, "D") for p in a + b)
    assert a[0].start <= np.datetime64("2023-07-01") < a[0].end
    assert a[-1].start <= np.datetime64("2023-07-31") < a[-1].end
    shared = set(days(a)) & set(days(b))
    assert shared and days(b)[: len(shared)] == sorted(shared)  # same edges where they overlap
    assert (a[0].start - np.datetime64("1970-01-01")) % np.timedelta64(12, "D") == 0
    w = periods_between(parse_period("2W"), "2023-07-01", "2023-07-01")
    assert len(w) == 1 and (w[0].end - w[0].start) == np.timedelta64(14, "D")


def test_explicit_edges_and_the_errors() -> None:
    spec = parse_period(edges=["2023-01-01", "2023-03-01", "2023-07-01"])
    assert days(periods_between(spec, "2023-02-10", "2023-12-31")) == [
        ("2023-01-01", "2023-03-01"),
        ("2023-03-01", "2023-07-01"),
    ]
    assert parse_period("acquisition") is None and parse_period(None) is None
    for bad in ("12", "D", "twelve days", "0D", "1.5M", "-2W"):
        with pytest.raises(PeriodError, match="is not a duration"):
            parse_period(bad)
    with pytest.raises(PeriodError, match="out of order: 2023-03-01 is not before 2023-02-01"):
        parse_period(edges=["2023-01-01", "2023-03-01", "2023-02-01"])
    with pytest.raises(PeriodError, match="at least two"):
        parse_period(edges=["2023-01-01"])
    with pytest.raises(PeriodError, match="not a date"):
        parse_period(edges=["2023-01-01", "soon"])
    with pytest.raises(PeriodError, match="ends"):
        periods_between(parse_period("1M"), "2023-05-01", "2023-04-01")


def test_acquisitions_go_to_the_period_that_holds_them() -> None:
    ps = periods_between(parse_period("1M"), "2023-06-01", "2023-08-31")
    times = [
        "2023-07-31T23:59:59Z",  # July's last second
        "2023-06-03T09:00:00Z",
        "2023-08-01T00:00:00Z",  # August's first
        "2023-07-02T21:30:00Z",
        "2023-09-01T00:00:00Z",  # after the last period: nowhere
    ]
    assert assign(times, ps) == [[1], [3, 0], [2]]
    assert ps[1].ref == np.datetime64("2023-07-16T12:00:00")  # 31 days: the middle
    assert ps[1].label == "2023-07-01T00:00:00Z"


def test_a_period_is_provisional_until_the_search_has_passed_its_end() -> None:
    july = periods_between(parse_period("1M"), "2023-07-01", "2023-07-01")[0]
    assert provisional(july, "2023-07-20")
    assert provisional(july, "2023-07-30")
    assert not provisional(july, "2023-07-31")  # its last day searched
    assert not provisional(july, "2023-09-01")


def test_best_evidence_prefers_rank_then_the_observation_nearest_the_reference() -> None:
    ref = obs_seconds("2023-07-16T12:00:00")
    best = BestEvidence(2, (1, 4))
    early = obs_seconds("2023-07-02T09:00:00")
    late = obs_seconds("2023-07-26T09:00:00")  # nearer the reference
    synth = np.array([[2, 2, 2, 0]], np.uint8)  # last pixel outside this swath
    won = best.offer(
        np.full((2, 1, 4), 0.1), synth, np.full((1, 4), 0.01), early, np.where(synth, 3, 255), ref
    )
    assert won.tolist() == [[True, True, True, False]]
    won = best.offer(
        np.full((2, 1, 4), 0.2), np.full((1, 4), 2), 0.02, late, np.full((1, 4), 3), ref
    )
    assert won.all()  # same rank, nearer: every pixel (and the one the first swath missed)
    # a real clear S2 pixel (better rank) wins even though it is farther from the reference
    s2 = np.array([[1, 0, 0, 0]], np.uint8)
    best.offer(np.full((2, 1, 4), 0.5), s2, 0.0, early, np.where(s2, 1, 255), ref)
    # a synthesis equally near as the one held (the same date again) does not replace it
    won = best.offer(
        np.full((2, 1, 4), 0.9), np.full((1, 4), 2), 0.9, late, np.full((1, 4), 3), ref
    )
    assert not won.any()
    np.testing.assert_allclose(best.optical[0, 0], [0.5, 0.2, 0.2, 0.2])
    assert best.source.tolist() == [[1, 2, 2, 2]]
    assert best.obs_time.tolist() == [[early, late, late, late]]
    np.testing.assert_allclose(best.uncertainty[0], [0.0, 0.02, 0.02, 0.02])
    assert best.settled(4) and not best.settled(3)  # a rank-3 pixel may still be nearer


def test_best_evidence_keeps_per_pixel_observation_times_and_no_data() -> None:
    ref = obs_seconds("2023-07-16T12:00:00")
    best = BestEvidence(1, (2, 2))
    t = np.array([[obs_seconds("2023-07-10"), obs_seconds("2023-07-20")], [0, 0]])
    rank = np.array([[1, 1], [255, 255]], np.uint8)
    best.offer(np.ones((1, 2, 2)), np.array([[1, 1], [0, 0]]), 0.0, t, rank, ref)
    assert best.obs_time[0].tolist() == t[0].tolist()
    assert best.obs_time[1].tolist() == [OBS_NONE, OBS_NONE]  # nothing offered there
    assert np.isnan(best.optical[0, 1]).all() and best.source[1].tolist() == [0, 0]
    assert obs_seconds("2014-01-01T00:00:01Z") == 1


# a period's fill on the real pipeline (run_local, fake SAR and model)

SWATHS = {0: (0, 150), 1: (100, 200), 2: (0, 300)}  # columns each acquisition covers


@dataclass(frozen=True)
class SwathSar:
    """``fake_sar(a)`` inside acquisition ``a``'s swath (``SWATHS``), NaN outside."""

    def read(self, a: int, window: tuple[int, int, int, int]) -> np.ndarray:
        r, c, h, w = window
        out = fake_sar(a).copy()
        c0, c1 = SWATHS[a]
        out[:, :, :c0] = np.nan
        out[:, :, c1:] = np.nan
        return out[:, r : r + h, c : c + w]


JULY_PASSES = ["2023-07-14T09:00:00Z", "2023-07-17T09:00:00Z", "2023-07-26T09:00:00Z"]
# from the middle of July (07-16 12:00): 2.1 days, 0.9 days, 9.9 days


def _fill_july(path) -> xr.Dataset:
    """The three swaths of ``SWATHS`` as the passes of one period, through ``run_local``."""
    from sar2opt.infer.ledger import TileLedger
    from sar2opt.infer.plan import BlockLattice
    from sar2opt.infer.predictor import TilePredictor
    from sar2opt.infer.run import FillJob, block_tasks, drain, run_local, strip_tasks
    from sar2opt.infer.store import create_store
    from sar2opt.zones import blocks_by_row

    july = periods_between(parse_period("1M"), "2023-07-01", "2023-07-31")[0]
    lat = BlockLattice(GRID, 128, 32)
    store = create_store(path, GRID, [july.label], ["B04"], {}, lat.block_px)
    passes = [[(w, ()) for w in JULY_PASSES]]
    keys = TimeSteps(parse_period("1M")).ledger_keys([july.label], [0], passes)
    blocks = block_tasks(keys, [0], lambda t: blocks_by_row(lat, None), set())
    job = FillJob(
        str(store), lat, SwathSar(), batch_size=4, acquisitions=((0, 1, 2),),
        acquisition_seconds=tuple(obs_seconds(w) for w in JULY_PASSES),
        reference_seconds=(obs_seconds(july.ref),),
    )  # fmt: skip
    predictor = TilePredictor.from_model(tiny_net(), META, flips=1)
    drain(run_local(strip_tasks(blocks, 3), job, lambda: predictor), TileLedger(store), len(blocks))
    return xr.open_zarr(store, consolidated=False)


FEATHER_PX = 16  # the lattice's context: (128 - 96) / 2


def test_a_period_takes_per_pixel_the_pass_nearest_its_middle(tmp_path) -> None:
    """Three swaths in one period: every pixel shows the covering pass nearest the period's
    middle and records its time; no pixel any swath covers stays empty."""
    from sar2opt.infer.predictor import predict

    ds = _fill_july(tmp_path / "p.zarr")
    got = ds["optical"].values[0, 0]
    obs = ds["obs_time"].values[0]
    # away from the grid border (padding) and from where a swath border is feathered
    f = FEATHER_PX
    for a, cols in (
        (0, slice(RF, 100)),  # only 0 and the far pass 2 here: 0 whole
        (1, slice(100 + f, 200 - f)),  # 1's swath inside its feather band
        (2, slice(200, W - RF)),  # only the far pass
    ):
        full = predict(tiny_net(), fake_sar(a)[None], NORM)[0, 0]
        inner = (slice(RF, H - RF), cols)
        np.testing.assert_allclose(got[inner], full[inner], atol=1e-5)
        assert (obs[inner] == np.datetime64(JULY_PASSES[a].rstrip("Z"), "ns")).all()
    assert (ds["source"].values[0] == 2).all() and np.isfinite(got).all()
    assert not np.isnat(obs).any()


def _steps(ds: xr.Dataset) -> tuple[float, float]:
    """(largest step between neighbouring columns inside the swaths, largest across the
    swath borders at columns 100 and 200)."""
    got = ds["optical"].values[0, 0][RF:-RF]
    step = np.abs(np.diff(got, axis=1))
    inside = np.r_[RF : 100 - 2 * FEATHER_PX, 100 + 2 * FEATHER_PX : 200 - 2 * FEATHER_PX]
    border = np.r_[100 - 5 : 100 + 2 * FEATHER_PX, 200 - 2 * FEATHER_PX : 200 + 5]
    return float(step[:, inside].max()), float(step[:, border].max())


def test_swath_borders_are_feathered_not_cut(tmp_path, monkeypatch) -> None:
    """Across a swath border the image steps no more than it does inside a swath; cut hard
    (no feathering) the same border jumps several times that (the guard)."""
    import sar2opt.infer.run as run

    inside, border = _steps(_fill_july(tmp_path / "feathered.zarr"))
    assert border <= 1.25 * inside, (border, inside)
    monkeypatch.setattr(run, "edge_weight", lambda valid, f: np.asarray(valid, np.float32))
    inside_hard, border_hard = _steps(_fill_july(tmp_path / "hard.zarr"))
    assert inside_hard == inside and border_hard > 3 * inside, (border_hard, inside)


def test_edge_weight_ramps_from_the_swath_edge_inward() -> None:
    valid = np.zeros((9, 40), bool)
    valid[:, :20] = True
    w = edge_weight(valid, 4)
    assert (w[:, 20:] == 0).all() and (w[:, :15] == 1).all()  # the array border is no edge
    assert np.all(np.diff(w[4, 15:21]) < 0)  # falls steadily to the edge
    assert w[4, 19] < 0.2 and edge_weight(valid, 0).tolist() == valid.astype(float).tolist()


def test_a_block_all_clear_in_s2_costs_no_forward_pass(tmp_path, monkeypatch) -> None:
    """Real clear S2 outranks any synthesis: once every pixel of a strip has it, the period's
    passes are neither read nor predicted; where S2 is cloudy they are."""
    import sar2opt.infer.run as run
    from sar2opt.infer.plan import BlockLattice
    from sar2opt.infer.predictor import TilePredictor
    from sar2opt.infer.run import CompositeSpec, FillJob, Strip, process_strip

    lat = BlockLattice(GRID, 128, 32)
    seen = {"s2": 0}

    def s2(items, grid, out_bands, spec):  # one clear scene, cloudy where ``items`` says
        seen["s2"] += 1  # (in the top 48 rows of the grid: half the first block row)
        h, w = grid.shape
        row0 = round((GRID.bounds[3] - grid.bounds[3]) / GRID.res_m)
        clear = np.ones((1, h, w), bool)
        if items[0]["cloudy"]:
            clear[:, : max(48 - row0, 0)] = False
        return np.full((1, 1, h, w), 0.07, np.float32), clear, np.array([obs_seconds("2023-07-16")])

    monkeypatch.setattr(run, "read_clear_s2", s2)

    class Counting(TilePredictor):
        calls = 0

        def __call__(self, batch):
            Counting.calls += 1
            return super().__call__(batch)

    predictor = Counting.from_model(tiny_net(), META, flips=1)
    ref = obs_seconds("2023-07-17")
    for cloudy, forwards in ((False, 0), (True, 1)):
        Counting.calls, out = 0, []
        job = FillJob(
            "unused.zarr", lat, SwathSar(), batch_size=4, out_bands=("B04",),
            s2_by_time=(({"cloudy": cloudy},),), composite=CompositeSpec(max_dt_days=6),
            acquisitions=((0, 1, 2),), acquisition_seconds=(ref - 9, ref, ref + 9),
            reference_seconds=(ref,), write=lambda job, strip, blocks, out=out: out.extend(blocks),
        )  # fmt: skip
        process_strip(Strip(0, "2023-07-01T00:00:00Z", 0, (0, 1)), job, predictor)
        assert Counting.calls == forwards * 3  # each pass once (2 blocks: one batch)
        assert out
        f = run.FEATHER_PX  # the ramp below the cloud: synthesis near it, S2 beyond
        for *_, source, _, obs in out:
            assert (source[:48] == (2 if cloudy else 1)).all()
            assert (source[48 + f :] == 1).all()  # clear S2 away from the cloud: kept
            assert (source[48] == (2 if cloudy else 1)).all() and (source[48 + f - 1] == 1).all()
            assert (obs[source == 1] == obs_seconds("2023-07-16")).all()


CLOUD = (slice(60, 140), slice(110, 190))  # rows, cols of a cloud on GRID (crosses blocks)
S2_BIAS = 0.003  # how far the synthesis is from the real S2 (reflectance)


def _s2_of(sar: np.ndarray) -> np.ndarray:
    """The real S2 (1 band) of the fake scene: a function of its VV, so it has texture."""
    return (0.05 + 0.004 * (sar[..., :1, :, :] + 12)).astype(np.float32)


def _composite_with_cloud(feather_px: int, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """The composite (H, W) and source (H, W) of one date whose S2 is clear but under
    ``CLOUD``, filled by a synthesis ``S2_BIAS`` above the real S2."""
    import sar2opt.infer.run as run
    from sar2opt.infer.plan import BlockLattice
    from sar2opt.infer.run import CompositeSpec, FillJob, block_tasks, strip_tasks
    from sar2opt.zones import blocks_by_row
    from tests.helpers.infer_fakes import FakeSar

    when = obs_seconds("2023-07-16")

    def s2(items, grid, out_bands, spec):
        h, w = grid.shape
        r0 = round((GRID.bounds[3] - grid.bounds[3]) / GRID.res_m)
        c0 = round((grid.bounds[0] - GRID.bounds[0]) / GRID.res_m)
        clear = np.ones((H, W), bool)
        clear[CLOUD] = False
        win = (slice(r0, r0 + h), slice(c0, c0 + w))
        return (
            _s2_of(fake_sar(0)[None])[..., win[0], win[1]],
            clear[None, win[0], win[1]],
            np.array([when]),
        )

    def biased(batch):
        pred = _s2_of(batch["sar"]) + np.float32(S2_BIAS)
        return {"pred": pred, "spread": np.full(pred[:, 0].shape, 0.001, np.float32)}

    monkeypatch.setattr(run, "read_clear_s2", s2)
    lat = BlockLattice(GRID, 128, 32)
    out: list = []
    job = FillJob(
        "unused.zarr", lat, FakeSar(), batch_size=4, out_bands=("B04",),
        s2_by_time=(({},),), composite=CompositeSpec(max_dt_days=6, feather_px=feather_px),
        reference_seconds=(when,), write=lambda job, strip, blocks: out.extend(blocks),
    )  # fmt: skip
    blocks = block_tasks(["2023-07-16"], [0], lambda t: blocks_by_row(lat, None), set())
    for strip in strip_tasks(blocks, 3):
        run.process_strip(strip, job, biased)
    img, src = np.full((H, W), np.nan, np.float32), np.zeros((H, W), np.uint8)
    for _, (r0, c0, r1, c1), optical, source, _, _ in out:
        img[r0:r1, c0:c1], src[r0:r1, c0:c1] = optical[0], source
    return img, src


def _edge_steps(img: np.ndarray, f: int) -> tuple[float, float]:
    """(mean over rows of the largest step along a profile inside the clear area, the same
    along a profile of the same length across the cloud's left and right edges)."""
    rows = slice(CLOUD[0].start + f + 2, CLOUD[0].stop - f - 2)  # off the top and bottom edges
    step = np.abs(np.diff(img[rows], axis=1))  # step[:, c]: between columns c and c + 1
    n = f + 4
    left, right = CLOUD[1].start, CLOUD[1].stop
    across = [step[:, left - n + 1 : left + 1], step[:, right - 2 : right + n - 2]]
    inside = [step[:, 20 : 20 + n], step[:, 260 : 260 + n]]
    return (
        float(np.mean([s.max(axis=1).mean() for s in inside])),
        float(np.mean([s.max(axis=1).mean() for s in across])),
    )


def test_cloud_mask_edges_are_feathered_not_cut(monkeypatch) -> None:
    """Around a cloud filled by a biased synthesis the composite steps across the mask edge
    little more than inside the clear area (cut hard: several times that); clear pixels
    away from the edge are the real S2 bit for bit, and ``source`` names the dominant one."""
    from sar2opt.infer.run import FEATHER_PX

    f = FEATHER_PX
    img, src = _composite_with_cloud(f, monkeypatch)
    truth = _s2_of(fake_sar(0)[None])[0, 0]
    clear = np.ones((H, W), bool)
    clear[CLOUD] = False
    keep = edge_weight(clear, f)
    np.testing.assert_array_equal(img[keep == 1], truth[keep == 1])  # bit for bit
    np.testing.assert_allclose(img[~clear], truth[~clear] + S2_BIAS, atol=1e-6)  # synthesis
    ramp = clear & (keep < 1)
    np.testing.assert_allclose(
        img[ramp], truth[ramp] + (1 - keep[ramp]) * S2_BIAS, atol=1e-6
    )  # the blend
    np.testing.assert_array_equal(src == 1, clear & (keep >= 0.5))
    assert ((src == 1) | (src == 2)).all() and (ramp & (src == 2)).any()
    inside, across = _edge_steps(img, f)
    assert across <= 1.5 * inside, (across, inside)
    hard, _ = _composite_with_cloud(0, monkeypatch)
    np.testing.assert_array_equal(hard[clear], truth[clear])
    inside_hard, across_hard = _edge_steps(hard, f)
    assert inside_hard == inside and across_hard >= 2.5 * inside, (across_hard, inside)
