"""Verdict arithmetic, the metric table of the HTML report and the reliability table."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.evaluate.reliability import reliability_table
from sar2opt.evaluate.report import coverage, metric_table_html, reliability_html, verdict


def _s(mae: float) -> dict:
    return {
        "mae": (mae, 0.001), "rmse": (2 * mae, 0.0), "psnr_db": (30.0, 1.0),
        "ssim": (0.9, 0.01), "sam_deg": (4.0, 0.1), "pixels": (100.0, 0.0),
    }  # fmt: skip


def test_verdict_gain_and_threshold():
    summ = {"ridge": _s(0.010), "mean": _s(0.011), "net": _s(0.008), "net2": _s(0.0095)}
    v = verdict(summ, "ridge", 0.15, exclude=["mean"])
    assert v["best"] == "net" and v["gain"] == pytest.approx(0.2) and v["passed"]
    v = verdict(summ, "ridge", 0.25, exclude=["mean"])
    assert not v["passed"]
    assert verdict({"ridge": _s(0.01)}, "ridge")["best"] is None


def test_metric_table_marks_best_and_gain():
    html = metric_table_html({"ridge": _s(0.010), "net": _s(0.008)}, "ridge", 3)
    assert "<b>0.0080 ± 0.0010</b>" in html and "+20.0 %" in html and "3 seeds" in html


def test_metric_table_coverage_column():
    short = _s(0.009) | {"pixels": (25.0, 0.0)}
    html = metric_table_html({"ridge": _s(0.010), "copy prior": short}, "ridge", 1)
    assert "<th>coverage</th>" in html
    assert "<td>25</td><td>25 %</td>" in html and "<td>100</td><td>100 %</td>" in html
    assert coverage({"ridge": _s(0.010), "copy prior": short}, None)["copy prior"] == 0.25


def test_reliability_table_on_a_known_input():
    # stated 1..8 (shuffled), |error| twice the stated value except one NaN pair: 7 pixels
    u = np.array([4.0, 1.0, 3.0, 2.0, 8.0, 6.0, 5.0, 7.0])
    e = 2 * u
    e[u == 8.0] = np.nan
    rows = reliability_table(u, e, n_bins=3)
    assert [r.bin for r in rows] == [0, 1, 2]
    assert [r.count for r in rows] == [3, 2, 2]  # equal-count bins, sorted by stated
    assert [r.stated for r in rows] == [2.0, 4.5, 6.5]
    assert [r.abs_error for r in rows] == [4.0, 9.0, 13.0]
    assert [r.ratio for r in rows] == [2.0, 2.0, 2.0]
    assert len(reliability_table(u, e)) == 7  # fewer pixels than bins: one per bin
    assert reliability_table(np.array([np.nan]), np.array([1.0])) == []
    with pytest.raises(ValueError, match="differ"):
        reliability_table(u, e[:3])


def test_a_bins_interval_is_narrow_over_many_like_blocks_and_wide_over_two_unlike_ones():
    """The bootstrap resamples groups (blocks), not pixels: 40 blocks erring alike give a
    tight interval around the ratio; two blocks, one at twice the stated error and one at
    half, give an interval spanning most of [0.5, 2] whatever their pixel count."""
    from sar2opt.evaluate.reliability import pixel_groups

    rng = np.random.default_rng(0)
    u = rng.uniform(0.01, 0.02, 4000)
    many = np.repeat(np.arange(40), 100)
    (row,) = reliability_table(u, 1.5 * u * rng.uniform(0.9, 1.1, u.size), 1, groups=many)
    assert row.ratio == pytest.approx(1.5, abs=0.01)
    assert 1.45 < row.ratio_lo < row.ratio < row.ratio_hi < 1.55
    two = np.repeat([0, 1], 2000)
    (row,) = reliability_table(u, np.where(two == 0, 2.0, 0.5) * u, 1, groups=two)
    assert row.ratio_lo < 0.6 and row.ratio_hi > 1.9
    assert reliability_table(u, u, 2)[0].ratio_lo is None  # no groups, no interval
    # one group per 32-px block of one date and one run, in mask order
    mask = np.zeros((2, 64, 64), bool)
    mask[0, 0, 0] = mask[0, 0, 40] = mask[1, 0, 0] = mask[0, 5, 3] = True
    g = pixel_groups(mask)
    # order (t, y, x): (0,0,0) (0,0,40) (0,5,3) (1,0,0); the first and third share a block
    assert g[0] == g[2] and len({g[0], g[1], g[3]}) == 3
    assert set(pixel_groups(mask, run=1)).isdisjoint(g)


def test_reliability_html_counts_calibrated_bins():
    from sar2opt.evaluate.reliability import ReliabilityRow

    rows = [ReliabilityRow(0, 0.01, 0.011, 5), ReliabilityRow(1, 0.02, 0.04, 5)]
    html = reliability_html({"net": rows})
    assert "1 of 2 bins" in html and "<td>2.00</td>" in html and "<td>1.10</td>" in html
    assert "interval" not in html  # rows without a bootstrap
    rows = [ReliabilityRow(0, 0.01, 0.011, 5, 0.9, 1.3), ReliabilityRow(1, 0.02, 0.04, 5, 1.4, 2.6)]
    html = reliability_html({"net": rows})
    assert "In 1 of 2 the 90 % interval" in html and "<td>1.40–2.60</td>" in html
