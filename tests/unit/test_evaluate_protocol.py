"""Block splits, scores and the seed protocol; the residual net starts as the ridge fit."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.evaluate.protocol import (
    BlockSplitSpec,
    Scene,
    block_split,
    fixed_method,
    mean_colour_method,
    mean_std,
    ridge_method,
    run_protocol,
    scores,
)
from sar2opt.ops import dilate


def test_block_split_disjoint_fraction_buffer_and_seeds():
    spec = BlockSplitSpec(block_px=8, val_frac=0.25, buffer_px=2)
    train, held = block_split(32, 32, spec, seed=3)
    assert held.sum() == 4 * 64  # 4 of 16 blocks
    assert not (train & held).any()
    assert not (train & dilate(held, 2)).any()  # the buffer ring is out of training
    assert (train | dilate(held, 2)).all()
    again, _ = block_split(32, 32, spec, seed=3)
    assert (again == train).all()
    others = [block_split(32, 32, spec, seed=s)[1] for s in range(5)]
    assert len({o.tobytes() for o in others}) > 1


def test_block_split_restricted_to_allowed_strip():
    allowed = np.zeros((32, 40), bool)
    allowed[:, 20:] = True  # strip 20 px wide: blocks anchored at column 20
    _, held = block_split(32, 40, BlockSplitSpec(8, 0.5, 0), 0, allowed)
    assert not held[:, :20].any() and held.sum() == 4 * 64  # 8 candidate blocks, half held
    with pytest.raises(ValueError, match="no 64 px block"):
        block_split(32, 40, BlockSplitSpec(64, 0.5, 0), 0)


def test_mean_std_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert np.isnan(mean_std([float("nan")])[0])


def _scene(t=2, h=32, w=32, seed=0) -> Scene:
    rng = np.random.default_rng(seed)
    vv = rng.uniform(-14, -6, (t, h, w))
    vh = vv - 7 + rng.normal(0, 0.5, (t, h, w))
    truth = np.stack([0.15 + 0.01 * vv, 0.2 + 0.005 * vh], axis=1)
    return Scene(
        np.stack([vv, vh], axis=1).astype("float32"),
        truth.astype("float32"),
        np.ones((t, h, w), bool),
        ("B03", "B04"),
        tuple(f"2020-01-0{i + 1}" for i in range(t)),
    )


def test_scores_hand_example():
    sc = _scene(t=1, h=8, w=8)
    pred = sc.truth + 0.01
    mask = np.ones((1, 8, 8), bool)
    s = scores(pred, sc.truth, mask)
    assert s["mae"] == pytest.approx(0.01, rel=1e-4)
    assert s["psnr_db"] == pytest.approx(40.0, abs=1e-3)
    assert s["pixels"] == 64 and 0.0 < s["sam_deg"] < 5.0 and s["ssim"] < 1.0


def test_run_protocol_ranks_methods_on_held_blocks():
    sc = _scene()
    methods = {
        "perfect": fixed_method(sc.truth),
        "mean colour": mean_colour_method(per_date=True),
        "ridge": ridge_method(per_date=True, alpha=1e-6),
        "ridge pooled": ridge_method(per_date=False, alpha=1e-6),
    }
    res = run_protocol(sc, methods, BlockSplitSpec(8, 0.25, 2), seeds=[0, 1, 2])
    summ = res.summary()
    assert summ["perfect"]["mae"] == (0.0, 0.0)
    assert summ["ridge"]["mae"][0] < 1e-4 < summ["mean colour"]["mae"][0]
    assert summ["ridge pooled"]["mae"][0] < 1e-4
    assert len(res.per_seed["ridge"]) == 3 and len(res.held) == 3
    assert summ["ridge"]["pixels"][0] == 2 * 4 * 64  # 2 dates x 4 held blocks


def test_residual_net_starts_as_ridge_and_trains():
    from sar2opt.evaluate.residual import ResidualSpec, fit_residual

    sc = _scene(t=1)
    train, _ = block_split(32, 32, BlockSplitSpec(8, 0.25, 0), 0)
    ridge = ridge_method(per_date=True)(sc, train, 0)
    zero = fit_residual(sc, train, 0, ResidualSpec(ngf=4, depth=2, patch_px=16, steps=0))
    np.testing.assert_allclose(zero, ridge, atol=1e-6)
    some = fit_residual(sc, train, 0, ResidualSpec(ngf=4, depth=2, patch_px=16, steps=3))
    assert some.shape == ridge.shape and np.isfinite(some).all()
    assert not np.allclose(some, ridge)


def test_block_mae_on_held_lattice():
    from sar2opt.evaluate.report import block_mae

    sc = _scene(t=1, h=8, w=10)
    held = np.zeros((8, 10), bool)
    held[0:4, 2:6] = True  # one 4 px block anchored at column 2
    pred = sc.truth.copy()
    pred[:, :, 0:4, 2:6] += 0.02
    m = block_mae(pred, sc, held, 4)
    assert m.shape == (2, 3)  # rows [0,4), [4,8); cols [0,2), [2,6), [6,10)
    assert m[0, 1] == pytest.approx(0.02) and np.isnan(m).sum() == 5
