"""Composite rules on numbers: nearest clear S2 within ±days, else synthesis (through the
fold the pipeline uses: ``periods.BestEvidence`` ranks the sources)."""

from __future__ import annotations

import numpy as np

from sar2opt.infer.composite import (
    SOURCE_MEANINGS,
    SOURCE_NODATA,
    SOURCE_S2,
    SOURCE_SYNTH,
    SOURCE_SYNTH_PRIOR,
    evidence_rank,
    nearest_clear_pick,
    synthesis_source,
)
from sar2opt.infer.periods import BestEvidence


def nearest_clear(obs, clear, dt, max_dt):
    out, pick = nearest_clear_pick(obs, clear, dt, max_dt)
    return out, pick >= 0


def compose(pred, s2, found, with_prior=None):
    """What ``run.process_strip`` writes for one block: clear S2 offered, then the synthesis."""
    best = BestEvidence(pred.shape[0], found.shape)
    s2_source = np.where(found, SOURCE_S2, SOURCE_NODATA).astype(np.uint8)
    best.offer(s2, s2_source, 0.0, 0, evidence_rank(s2_source), 0)
    source = synthesis_source(pred, with_prior)
    best.offer(pred, source, 0.0, 0, evidence_rank(source), 0)
    return best.optical, best.source


def test_nearest_clear_prefers_smallest_abs_dt_and_respects_window() -> None:
    obs = np.stack([np.full((1, 2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])  # N=3, C=1
    clear = np.ones((3, 2, 2), bool)
    clear[1, 0, 0] = False  # the nearest is cloudy at (0, 0)
    clear[0, 1, 1] = clear[1, 1, 1] = False
    dt = np.array([-4.0, 1.0, 9.0])  # the third is outside ±6 days
    out, found = nearest_clear(obs, clear, dt, 6.0)
    np.testing.assert_allclose(out[0], [[0.1, 0.2], [0.2, np.nan]])
    assert found.tolist() == [[True, True], [True, False]]
    obs[0, 0, 1, 0] = np.nan  # a NaN observation is no observation
    out, found = nearest_clear(obs, clear, np.array([-1.0, 2.0, 3.0]), 6.0)
    assert out[0, 1, 0] == np.float32(0.2) and out[0, 1, 1] == np.float32(0.3)


def test_compose_source_codes() -> None:
    pred = np.array([[[0.5, 0.5], [np.nan, 0.5]]], np.float32)
    s2 = np.array([[[0.1, np.nan], [0.2, np.nan]]], np.float32)
    found = np.array([[True, False], [True, False]])
    out, src = compose(pred, s2, found)
    np.testing.assert_allclose(out, [[[0.1, 0.5], [0.2, 0.5]]])
    assert src.tolist() == [[SOURCE_S2, SOURCE_SYNTH], [SOURCE_S2, SOURCE_SYNTH]]
    out, src = compose(pred, s2, np.zeros((2, 2), bool))
    assert src[1, 0] == SOURCE_NODATA and np.isnan(out[0, 1, 0])


def test_source_says_whether_the_synthesis_had_a_prior() -> None:
    """Real clear S2 wins; a synthesis is "with prior" only where the model had one; the
    codes of older stores keep their meaning (new ones are appended)."""
    pred = np.array([[[0.5, 0.5, 0.5], [np.nan, 0.5, np.nan]]], np.float32)
    s2 = np.full((1, 2, 3), 0.1, np.float32)
    found = np.array([[True, False, False], [False, False, False]])
    with_prior = np.array([[True, True, False], [True, False, False]])
    out, src = compose(pred, s2, found, with_prior)
    assert src.tolist() == [
        [SOURCE_S2, SOURCE_SYNTH_PRIOR, SOURCE_SYNTH],
        [SOURCE_NODATA, SOURCE_SYNTH, SOURCE_NODATA],
    ]
    assert out[0, 0, 0] == np.float32(0.1) and out[0, 0, 1] == np.float32(0.5)
    assert list(SOURCE_MEANINGS.items())[:3] == [
        (0, "no data"),
        (1, "sentinel-2"),
        (2, "synthesis"),
    ]
    assert SOURCE_MEANINGS[SOURCE_SYNTH_PRIOR] == "synthesis with prior" and SOURCE_SYNTH_PRIOR == 3
