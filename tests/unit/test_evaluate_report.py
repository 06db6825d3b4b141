"""Verdict arithmetic and the metric table of the HTML report."""

from __future__ import annotations

import pytest

from sar2opt.evaluate.report import metric_table_html, verdict


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
