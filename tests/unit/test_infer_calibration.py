"""Uncertainty calibration: the spread -> expected |error| knots, fitted and applied on numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.infer.calibration import (
    CALIBRATION_KEY,
    UNCALIBRATED,
    apply_calibration,
    decile_table,
    describe,
    fit_calibration,
    format_decile_table,
    knots_for,
)


def noisy_errors(n: int, seed: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Spreads, and errors |N(0, sigma)| whose mean is ``scale`` x the spread (as the demo's
    raw spread: ranks errors, ~3x too small)."""
    rng = np.random.default_rng(seed)
    s = rng.lognormal(np.log(0.003), 0.6, n)
    sigma = scale * s / np.sqrt(2 / np.pi)  # E|N(0, sigma)| = sigma sqrt(2/pi)
    return s, np.abs(rng.normal(0, sigma))


def test_exact_linear_relation_is_recovered() -> None:
    s = np.linspace(0.001, 0.01, 1000)
    knots = fit_calibration(s, 3 * s, bins=10)
    assert knots["pixels"] == 1000 and len(knots["spread"]) == 10
    np.testing.assert_allclose(knots["abs_error"], 3 * np.asarray(knots["spread"]), rtol=1e-9)
    inside = s[(s >= knots["spread"][0]) & (s <= knots["spread"][-1])]
    np.testing.assert_allclose(apply_calibration(inside, knots), 3 * inside, rtol=1e-5)
    # above the last knot: proportional (keeps the order); below the first: its error
    assert apply_calibration(np.float32(0.02), knots) == pytest.approx(0.06, rel=1e-5)
    assert apply_calibration(np.float32(0.0), knots) == pytest.approx(knots["abs_error"][0])


def test_non_monotone_bins_are_pooled_into_rising_knots() -> None:
    knots = fit_calibration([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], bins=4)
    assert knots["spread"] == [1.0, 2.5, 4.0]
    assert knots["abs_error"] == [1.0, 2.5, 4.0]
    # ties in the spread never make two knots at one spread
    tied = fit_calibration([0.0] * 50 + [1.0] * 50, [0.1] * 50 + [0.5] * 50, bins=10)
    assert tied["spread"] == [0.0, 1.0] and tied["abs_error"] == pytest.approx([0.1, 0.5])


def test_held_out_deciles_within_a_quarter_after_calibration_not_before() -> None:
    s_fit, e_fit = noisy_errors(40_000, seed=0)
    s, e = noisy_errors(40_000, seed=1)
    raw = decile_table(s, e)
    assert all(r["ratio"] > 2.5 for r in raw)  # the raw spread: ~3x too small everywhere
    cal = decile_table(apply_calibration(s, fit_calibration(s_fit, e_fit)), e)
    assert len(cal) == 10 and sum(r["pixels"] for r in cal) == 40_000
    assert all(0.75 <= r["ratio"] <= 1.25 for r in cal), format_decile_table(cal)


def test_nan_stays_nan_and_is_left_out_of_the_fit() -> None:
    knots = fit_calibration([np.nan, 1.0, 2.0], [5.0, 1.0, np.nan], bins=3)
    assert knots["pixels"] == 1 and knots["spread"] == [1.0]
    out = apply_calibration(np.array([np.nan, 2.0], np.float32), knots)
    assert np.isnan(out[0]) and out[1] == pytest.approx(2.0) and out.dtype == np.float32
    with pytest.raises(ValueError, match="no finite pixel"):
        fit_calibration([np.nan], [1.0])
    with pytest.raises(ValueError, match="differ in size"):
        fit_calibration([1.0, 2.0], [1.0])


def test_knots_are_chosen_by_hypothesis_count_and_described() -> None:
    fits = [{"flips": 2, "spread": [1.0], "abs_error": [3.0], "pixels": 7}]
    assert knots_for({}, 2) is None and describe(None) == UNCALIBRATED
    assert knots_for({CALIBRATION_KEY: fits}, 3) is None
    assert knots_for({CALIBRATION_KEY: fits}, 2) is fits[0]
    assert "2 hypotheses" in describe(fits[0]) and "7 validation pixels" in describe(fits[0])


def test_predictor_states_the_calibrated_error_and_keeps_the_raw_spread() -> None:
    from sar2opt.infer.predictor import TilePredictor
    from tests.unit.test_infer_predictor import META

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).eval()  # not flip-invariant: flips disagree
    sar = np.random.default_rng(4).normal(-12, 3, (1, 2, 16, 16)).astype(np.float32)
    sar[0, 0, 2, 3] = np.nan
    plain = TilePredictor.from_model(conv, META, flips=2)({"sar": sar})
    np.testing.assert_array_equal(plain["uncertainty"], plain["spread"])  # older checkpoints
    knots = {"flips": 2, "spread": [0.001, 0.01], "abs_error": [0.004, 0.02], "pixels": 9}
    meta = dict(META, **{CALIBRATION_KEY: [knots]})
    cal = TilePredictor.from_model(conv, meta, flips=2)({"sar": sar})
    np.testing.assert_array_equal(cal["spread"], plain["spread"])
    np.testing.assert_array_equal(cal["pred"], plain["pred"])
    want = apply_calibration(plain["spread"], knots)
    np.testing.assert_allclose(cal["uncertainty"], want, rtol=1e-6, equal_nan=True)
    assert np.isnan(cal["uncertainty"][0, 2, 3]) and (cal["uncertainty"] > cal["spread"]).any()
    # fitted for 2 hypotheses only: 3 flips are left uncalibrated
    three = TilePredictor.from_model(conv, meta, flips=3)({"sar": sar})
    np.testing.assert_array_equal(three["uncertainty"], three["spread"])


def test_update_meta_keeps_the_weights_and_load_models_says_calibrated(tmp_path) -> None:
    from sar2opt.config import Config, ModelSpec
    from sar2opt.infer.predictor import load_models
    from sar2opt.train import checkpoint

    d = checkpoint.save_untrained_checkpoint(tmp_path / "c", Config(model=ModelSpec(ngf=8)))
    before = torch.load(d / "model.pt", weights_only=True)["generator"]
    assert load_models([d]).uncertainty_calibration(2) == UNCALIBRATED
    fits = [{"flips": 2, "spread": [0.001, 0.01], "abs_error": [0.004, 0.02], "pixels": 9}]
    checkpoint.update_meta(d, **{CALIBRATION_KEY: fits})
    after = torch.load(d / "model.pt", weights_only=True)
    assert all(torch.equal(before[k], after["generator"][k]) for k in before)
    assert after["meta"][CALIBRATION_KEY] == fits and checkpoint.load_meta(d)["epoch"] == 0
    models = load_models([d])
    assert models.uncertainty_calibration(2).startswith("calibrated")
    assert models.uncertainty_calibration(4) == UNCALIBRATED
    assert load_models([d, d]).uncertainty_calibration(2) == UNCALIBRATED  # an ensemble
