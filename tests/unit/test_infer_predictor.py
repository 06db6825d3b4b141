"""TilePredictor: normalise -> generator -> denormalise, NaN handling, padding to 32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.infer.predictor import TilePredictor, predict

NORM = {
    "sar_mean": [-12.0, -19.0],
    "sar_std": [3.0, 4.0],
    "opt_mean": [0.05, 0.08],
    "opt_std": [0.02, 0.04],
}
META = {"in_bands": ["vv", "vh"], "out_bands": ["B04", "B08"], "norm": NORM, "model": {}}


class Recorder(torch.nn.Module):
    """Identity that remembers what the generator was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        self.seen.append(x.clone())
        return x


def test_predict_normalises_and_denormalises_exactly() -> None:
    rng = np.random.default_rng(0)
    sar = np.stack([rng.normal(-12, 3, (3, 64, 64)), rng.normal(-19, 4, (3, 64, 64))], axis=1)
    sar = sar.astype(np.float32)  # (B=3, C=2, 64, 64)
    model = Recorder()
    pred = predict(model, sar, NORM)
    assert pred.shape == sar.shape and pred.dtype == np.float32
    x = model.seen[0].numpy()
    np.testing.assert_allclose(x[:, 0], (sar[:, 0] + 12) / 3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x[:, 1], (sar[:, 1] + 19) / 4, rtol=1e-5, atol=1e-5)
    # identity generator: optical = normalised SAR * opt_std + opt_mean
    np.testing.assert_allclose(pred[:, 0], (sar[:, 0] + 12) / 3 * 0.02 + 0.05, atol=1e-6)
    np.testing.assert_allclose(pred[:, 1], (sar[:, 1] + 19) / 4 * 0.04 + 0.08, atol=1e-6)


def test_predict_nan_becomes_band_mean_and_output_nan() -> None:
    sar = np.full((1, 2, 32, 32), -12.0, np.float32)
    sar[0, 1] = -19.0
    sar[0, 0, 5, 7] = np.nan  # VV missing at one pixel
    sar[0, 1, 10:12, :] = np.nan  # VH missing on two rows
    model = Recorder()
    pred = predict(model, sar, NORM)
    x = model.seen[0].numpy()
    assert np.isfinite(x).all()
    assert x[0, 0, 5, 7] == 0.0 and (x[0, 1, 10:12] == 0.0).all()
    invalid = np.zeros((32, 32), bool)
    invalid[5, 7] = True
    invalid[10:12] = True
    assert np.isnan(pred[0, :, invalid]).all()  # every output band NaN where SAR invalid
    assert np.isfinite(pred[0, :, ~invalid]).all()
    np.testing.assert_allclose(pred[0, 0, ~invalid], 0.05, atol=1e-7)


@pytest.mark.parametrize("h, w", [(40, 70), (20, 45), (1, 1)])
def test_predict_pads_to_multiple_of_32_and_crops_back(h: int, w: int) -> None:
    rng = np.random.default_rng(1)
    sar = rng.normal(-12, 3, (2, 2, h, w)).astype(np.float32)
    model = Recorder()
    pred = predict(model, sar, NORM)
    assert pred.shape == (2, 2, h, w)
    x = model.seen[0]
    assert x.shape[-2:] == (-(-h // 32) * 32, -(-w // 32) * 32)
    if h > 1:  # reflect padding: the first padded row mirrors row h-2
        np.testing.assert_allclose(x[:, :, h, :w].numpy(), x[:, :, h - 2, :w].numpy())


def test_tile_predictor_call_passes_keys_through() -> None:
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    tp = TilePredictor.from_model(conv, META, device="cpu")
    batch = {
        "sar": np.full((3, 2, 32, 32), -12.0, np.float32),
        "t": np.array([0, 1, 1]),
        "row": np.array([0, 0, 224]),
        "col": np.array([0, 224, 0]),
        "time": np.array(["a", "b", "b"]),
    }
    batch["sar"][1, 0, 0, 0] = np.nan
    out = tp(batch)
    assert "sar" not in out
    assert out["pred"].shape == (3, 2, 32, 32) and out["pred"].dtype == np.float32
    for k in ("t", "row", "col", "time"):
        np.testing.assert_array_equal(out[k], batch[k])
    assert out["valid"].shape == (3, 32, 32) and not out["valid"][1, 0, 0]
    assert np.isnan(out["pred"][1, :, 0, 0]).all()
    assert tp.out_bands == ["B04", "B08"] and not conv.training


def test_tile_predictor_loads_checkpoint_once(tmp_path) -> None:
    ckpt = pytest.importorskip("sar2opt.train.checkpoint")
    from sar2opt.config import ModelSpec, config_to_dict
    from sar2opt.models import build_generator

    spec = ModelSpec(ngf=4, depth=5)
    gen = build_generator(spec, 2, 2)
    meta = dict(META, model=config_to_dict(spec), config={}, git_sha="test")
    ckpt.save_checkpoint(tmp_path, gen, meta)
    tp = TilePredictor(tmp_path, device="auto")
    assert tp.device.type in ("cpu", "cuda")
    out = tp({"sar": np.full((2, 2, 64, 64), -12.0, np.float32), "t": np.array([0, 1])})
    assert out["pred"].shape == (2, 2, 64, 64) and np.isfinite(out["pred"]).all()
