import numpy as np
import pytest

from sar2opt.evaluate.metrics import constant_baseline, format_table, mae, psnr, rmse, score_table


def test_metrics_against_hand_computed_values():
    truth = np.zeros((2, 2, 2), "float32")
    pred = truth.copy()
    pred[0, 0, 0] = 0.4  # one error of 0.4 over 8 values
    assert mae(pred, truth) == pytest.approx(0.05)
    assert rmse(pred, truth) == pytest.approx(np.sqrt(0.16 / 8))
    assert psnr(pred, truth) == pytest.approx(10 * np.log10(1 / 0.02))  # 16.99 dB
    assert psnr(truth, truth) == float("inf")


def test_mask_and_nan_are_excluded():
    truth = np.zeros((1, 2, 2), "float32")
    pred = np.array([[[0.1, 9.0], [np.nan, 0.1]]], "float32")
    mask = np.array([[True, False], [True, True]])
    assert mae(pred, truth, mask) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no valid"):
        mae(pred, truth, np.zeros((2, 2), bool))


def test_constant_baseline_and_table():
    truth = np.stack([np.full((4, 4), 0.02), np.full((4, 4), 0.3)]).astype("float32")
    base = constant_baseline([0.03, 0.28], truth)
    assert base.shape == truth.shape and mae(base, truth) == pytest.approx(0.015)
    rows = score_table({"model": truth, "mean colour": base}, truth)
    assert rows[0]["psnr_db"] == float("inf") and rows[1]["pixels"] == 16
    assert "mean colour" in format_table(rows)
