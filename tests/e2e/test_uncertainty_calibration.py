"""The training job calibrates the checkpoint's uncertainty on its validation blocks: on the
held-out test blocks every decile of stated uncertainty errs within ±25 % of what it states."""

from __future__ import annotations

import json

import pytest

from sar2opt.infer.calibration import CALIBRATION_KEY, UNCALIBRATED

pytestmark = pytest.mark.slow


def test_trained_checkpoint_states_its_error_per_decile(syn_trained) -> None:
    from sar2opt.infer.predictor import load_models
    from sar2opt.train.checkpoint import load_meta

    fits = load_meta(syn_trained["ckpt"])[CALIBRATION_KEY]
    assert [f["flips"] for f in fits] == [2, 3, 4]
    for f in fits:
        assert f["pixels"] > 1000 and len(f["spread"]) == len(f["abs_error"]) >= 2
        assert f["spread"] == sorted(f["spread"]) and f["abs_error"] == sorted(f["abs_error"])
    assert load_models([syn_trained["ckpt"]]).uncertainty_calibration(2) != UNCALIBRATED
    rel = json.loads((syn_trained["train"] / "test_scores.json").read_text())["uncertainty"]
    assert rel["split"] == "test" and rel["calibrated"] and len(rel["deciles"]) == 10
    assert rel["on"] == "patches"  # a spread alone (no scene fit) is calibrated on patches
    ratios = [d["ratio"] for d in rel["deciles"]]
    assert all(0.75 <= r <= 1.25 for r in ratios), ratios
    raw = [d["ratio"] for d in rel["deciles_raw_spread"]]
    assert min(raw) > 1.25, raw  # the raw spread understates the error: the guard
    assert "uncertainty per decile" in syn_trained["train_log"]
