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


def test_reliability_html_counts_calibrated_bins():
    from sar2opt.evaluate.reliability import ReliabilityRow

    rows = [ReliabilityRow(0, 0.01, 0.011, 5), ReliabilityRow(1, 0.02, 0.04, 5)]
    html = reliability_html({"net": rows})
    assert "1 of 2 bins" in html and "<td>2.00</td>" in html and "<td>1.10</td>" in html
