"""The stated uncertainty of a scene-fit model sees the fit's own error: per pixel the mean
|same-date S2 - reference| over the clear pixels around it (``models.reference.
reference_error``), combined with the flips' spread into ``raw_uncertainty``, which the
calibration maps (``infer.predictor``); calibrations fitted before map the spread alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.config import ModelSpec, config_to_dict
from sar2opt.data.inputs import input_channels, model_inputs
from sar2opt.infer.calibration import STATED_INPUT, apply_calibration
from sar2opt.infer.predictor import TilePredictor
from sar2opt.models import build_generator
from sar2opt.models.reference import (
    NO_CHECK_ERROR,
    box_error,
    extrapolation,
    fill_factor,
    fit_features,
    fit_inputs,
    input_slices,
    reference_error,
    scene_reference,
)
from tests.helpers.infer_fakes import NORM

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _x(n: int = 2, h: int = 64, w: int = 64, clear_frac: float = 0.7, seed: int = 0):
    """Standardised SC input (2 SAR, 1 band + mask) and a reference, with known errors."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, h, w, generator=g)
    x[:, 3] = (torch.rand(n, h, w, generator=g) > clear_frac).float()  # 1 = cloud
    ref = torch.randn(n, 1, h, w, generator=g)
    return x, ref, input_slices("SC", 4, 1)


def _box(x: torch.Tensor, ref: torch.Tensor, sl: dict, **kw) -> torch.Tensor:
    """box_error of input x's same-date S2 against ref, over its clear pixels."""
    _, refl, clear, _ = fit_inputs(x, sl)
    return box_error(refl, clear, ref, **kw)


def _factor(x: torch.Tensor, sl: dict, **kw) -> torch.Tensor:
    """extrapolation of input x's scene-fit features (SAR, prior bands) beyond its clear
    pixels'."""
    sar, _, clear, prior = fit_inputs(x, sl)
    return extrapolation(fit_features(sar, prior, missing=False), clear, **kw)


def test_a_pixel_gets_the_mean_error_of_the_clear_pixels_in_its_box() -> None:
    x, ref, sl = _x()
    got = _box(x, ref, sl, box_px=9, min_px=10)
    d = (x[:, 2:3] - ref).abs()
    clear = x[:, 3] < 0.5
    for n, i, j in ((0, 30, 40), (1, 2, 61), (0, 0, 0)):  # inside, near an edge, a corner
        win = (slice(max(i - 4, 0), i + 5), slice(max(j - 4, 0), j + 5))
        m = clear[n][win]
        torch.testing.assert_close(got[n, 0, i, j], d[n, 0][win][m].mean())


def test_too_few_clear_pixels_take_the_window_mean_and_none_the_band_mean_error() -> None:
    x, ref, sl = _x(n=2)
    x[0, 3, :, :32] = 1.0  # west half of sample 0 cloudy: its boxes there see no clear pixel
    x[1, 3] = 1.0  # sample 1: nothing clear
    got = _box(x, ref, sl, box_px=9, min_px=10)
    clear = x[0, 3] < 0.5
    whole = (x[0, 2] - ref[0, 0]).abs()[clear].mean()
    torch.testing.assert_close(got[0, 0, 10, 5], whole)
    # nothing to check it on: the band mean's expected error, sqrt(2 / pi) standardised
    torch.testing.assert_close(got[1], torch.full_like(got[1], NO_CHECK_ERROR))


def _sc_model() -> tuple[torch.nn.Module, dict]:
    spec = ModelSpec(generator="unet", input_set="SC", reference="scene_fit", ngf=8, depth=3)
    in_ch, dem_ch = input_channels("SC", 2, 1)
    torch.manual_seed(0)
    model = build_generator(spec, in_ch, 1, dem_ch).eval()
    for p in model.parameters():  # a net that adds a little: the flips disagree
        p.data.add_(0.01 * torch.randn_like(p))
    meta = {"in_bands": ["vv", "vh"], "out_bands": ["B04"], "norm": NORM, "input_set": "SC",
            "model": config_to_dict(spec)}  # fmt: skip
    return model, meta


def _scene(noise: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Physical SC inputs: B04 linear in the SAR plus ``noise`` (reflectance) no fit can
    explain, 30 % clouds."""
    rng = np.random.default_rng(seed)
    sar = np.stack([rng.uniform(-15, -9, (1, 64, 64)), rng.uniform(-22, -16, (1, 64, 64))], 1)
    b04 = 0.05 + 0.004 * (sar[:, :1] + 12) + rng.normal(0, noise, (1, 1, 64, 64))
    cloud = rng.random((1, 1, 64, 64)) < 0.3
    cloudy = np.concatenate([np.where(cloud, np.nan, b04), cloud], axis=1)
    return {"sar": sar.astype(np.float32), "cloudy": cloudy.astype(np.float32)}


def test_the_raw_uncertainty_grows_with_what_the_scene_fit_cannot_explain() -> None:
    """Two scenes alike but for the noise no fit explains: the flips' spread does not tell
    them apart, the raw uncertainty does (about the noise's mean |.|: 0.8 sigma), and it is
    the spread and the reference's error combined."""
    model, meta = _sc_model()
    pred = TilePredictor.from_model(model, meta, flips=2)
    quiet, noisy = pred(_scene(0.001)), pred(_scene(0.02))
    spread_ratio = np.nanmean(noisy["spread"]) / np.nanmean(quiet["spread"])
    raw_ratio = np.nanmean(noisy["raw_uncertainty"]) / np.nanmean(quiet["raw_uncertainty"])
    assert raw_ratio > 5 * spread_ratio
    assert 0.6 * 0.02 < np.nanmedian(noisy["raw_uncertainty"]) < 1.0 * 0.02
    # raw = hypot(spread, the error of the fit under the reference, in reflectance)
    x, _ = model_inputs(_scene(0.02), NORM, "SC")
    xt = torch.from_numpy(x)
    with torch.no_grad():
        fit = scene_reference(xt, model.slices)[0]
        r = reference_error(xt, fit, model.slices)[:, 0].numpy() * 0.02
    np.testing.assert_allclose(noisy["raw_uncertainty"], np.hypot(noisy["spread"], r), rtol=1e-5)


def test_old_calibrations_map_the_spread_new_ones_the_raw_uncertainty() -> None:
    model, meta = _sc_model()
    knots = {"flips": 2, "spread": [0.001, 0.01], "abs_error": [0.002, 0.03], "pixels": 100}
    batch = _scene(0.02)
    old = TilePredictor.from_model(model, meta | {"uncertainty_calibration": [knots]}, flips=2)
    new_knots = knots | {"input": STATED_INPUT}
    new = TilePredictor.from_model(model, meta | {"uncertainty_calibration": [new_knots]}, flips=2)
    o, n = old(batch), new(batch)
    np.testing.assert_array_equal(o["uncertainty"], apply_calibration(o["spread"], knots))
    np.testing.assert_array_equal(n["uncertainty"], apply_calibration(n["raw_uncertainty"], knots))
    assert np.nanmean(n["uncertainty"]) > np.nanmean(o["uncertainty"])


def test_the_calibration_scores_a_cloud_removal_model_where_it_synthesised(monkeypatch) -> None:
    """``train.calibrate.spread_and_error`` on patches of an SC model: only the clear pixels
    its same-date S2 masked (laid clouds) count, and the patches' context reference and its
    error over that context are what the predictor gets, as inference fits and checks it
    over its window."""
    import pandas as pd

    from sar2opt.data.inputs import REF_ERR_KEY, REF_KEY, normalise_input
    from sar2opt.train import calibrate

    model, meta = _sc_model()
    rng = np.random.default_rng(1)
    n, p = 3, 32
    hidden = rng.random((n, p, p)) < 0.4  # laid clouds
    truth_clear = rng.random((n, p, p)) < 0.9
    scene = _scene(0.01)
    sar = np.repeat(scene["sar"][:, :, :p, :p], n, 0)
    b04 = np.nan_to_num(np.repeat(scene["cloudy"][:, :1, :p, :p], n, 0), nan=0.05)
    cloudy = np.concatenate([np.where(hidden[:, None], np.nan, b04), hidden[:, None]], 1)
    ref = rng.normal(0, 1, (n, 1, p, p)).astype(np.float32)
    err = rng.uniform(0.1, 2.0, (n, 1, p, p)).astype(np.float32)
    batch = {
        "sar": normalise_input("sar", sar.astype(np.float32), NORM),
        "cloudy": normalise_input("cloudy", cloudy.astype(np.float32), NORM),
        "opt": normalise_input("prior", b04.astype(np.float32), NORM),
        "mask": truth_clear[:, None].astype(np.float32),
        REF_KEY: ref,
        REF_ERR_KEY: err,
    }
    monkeypatch.setattr(calibrate, "read_patches", lambda *a, **k: batch)
    seen = []
    real = TilePredictor.predict_normalised

    def spy(self, x, valid=None, ref=None, ref_err=None):
        seen.append((ref, ref_err))
        return real(self, x, valid, ref, ref_err)

    monkeypatch.setattr(TilePredictor, "predict_normalised", spy)
    rows = pd.DataFrame({"time": [0] * n, "row": [0] * n, "col": [0] * n})
    got = calibrate.spread_and_error(model, meta, "unused", rows, {}, (2,))
    s, e = got[2]
    assert s.size == e.size == int((hidden & truth_clear).sum())
    assert seen and all(r is ref and e is err for r, e in seen)
    # the given error is what the raw uncertainty combines with the spread (0.02 = opt_std)
    out = TilePredictor.from_model(model, meta, flips=2).predict_normalised(
        calibrate.model_input(batch, "SC").numpy(), ref=ref, ref_err=err
    )
    np.testing.assert_allclose(
        out["raw_uncertainty"], np.hypot(out["spread"], 0.02 * err[:, 0]), rtol=1e-5
    )


def test_a_window_off_the_stride_is_fitted_once_and_without_its_padding(monkeypatch) -> None:
    """An untrained scene-fit model is its reference: on a 60-px window (the U-Net pads it
    to 64) its prediction is the fit of the window itself, made once for both flips and the
    reference error, not a refit per flip on the reflect-padded input."""
    import sar2opt.models.reference as reference

    spec = ModelSpec(generator="unet", input_set="SC", reference="scene_fit", ngf=8, depth=3)
    in_ch, dem_ch = input_channels("SC", 2, 1)
    model = build_generator(spec, in_ch, 1, dem_ch).eval()
    _, meta = _sc_model()
    batch = {k: v[..., 2:62, 2:62] for k, v in _scene(0.02).items()}
    fits = []
    real = reference.scene_fit
    monkeypatch.setattr(reference, "scene_fit", lambda *a, **k: fits.append(1) or real(*a, **k))
    out = TilePredictor.from_model(model, meta, flips=2)(batch)
    assert len(fits) == 1
    x, _ = model_inputs(batch, NORM, "SC")
    with torch.no_grad():
        own = model.reference(torch.from_numpy(x))[0, 0].numpy()
    b04 = own * NORM["opt_std"][0] + NORM["opt_mean"][0]
    np.testing.assert_allclose(out["pred"][0, 0], b04, rtol=1e-5, atol=1e-6)


def _far(shift: float, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Standardised SC input: SAR like noise everywhere but a 16 px patch whose VV lies
    ``shift`` (in the clear pixels' standard deviations) beyond theirs, hidden with a ring
    of 4 px (no clear pixel's local mean sees the shift)."""
    x, _, sl = _x(n=1, clear_frac=1.0, seed=seed)
    x[0, 3, 20:44, 20:44] = 1.0
    x[0, 0, 24:40, 24:40] += shift
    return x, sl


def test_a_pixel_unlike_the_clear_ones_states_the_fit_s_error_times_its_distance() -> None:
    """The extrapolation factor is 1 for pixels like those the fit was made on and grows in
    proportion to the distance beyond them (twice the shift: about twice the factor)."""
    x, sl = _far(0.0)
    like = _factor(x, sl)
    assert like.min() == 1.0
    assert (like == 1.0).float().mean() > 0.5  # most pixels are no farther than typical
    assert like[0, 0, 20:44, 20:44].median() < 1.3
    near, far = (_factor(_far(s)[0], sl)[0, 0, 28:36, 28:36] for s in (6.0, 12.0))
    assert near.median() > 3.0
    assert 1.8 < float(far.median() / near.median()) < 2.2
    # and the stated error of the fit is its checked error times that factor, times the
    # share its residual's fill leaves
    x, sl = _far(6.0)
    fit = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    _, refl, clear, _ = fit_inputs(x, sl)
    kept = fill_factor(refl, clear, fit)
    want = _box(x, fit, sl) * _factor(x, sl) * kept
    torch.testing.assert_close(reference_error(x, fit, sl), want)


def test_the_fill_s_share_is_checked_on_clear_pixels_at_the_gap_s_distance() -> None:
    """Fields 24 px wide that the fit misses by +-0.1, white noise of 0.01 over them: next to
    a gap a pixel's residual is its field's, and the fill leaves the noise; 3-8 px away a
    good part of the one-sided boxes reach into the next field; deep in a 70-px gap (past the
    17-px box) little is known. 1 where the fit stands alone; white noise alone: about 1."""
    g = torch.Generator().manual_seed(0)
    h, w = 64, 256
    cols = torch.arange(w)
    field = torch.where((cols // 24) % 2 == 0, 0.1, -0.1).expand(h, w)
    refl = (field + 0.01 * torch.randn(h, w, generator=g))[None, None].double()
    fit = torch.zeros_like(refl)
    clear = torch.ones(1, h, w, dtype=torch.bool)
    clear[:, :, 100:170] = False  # a gap: the 17-px box reaches 8 px in, the 65-px 32 px
    f = fill_factor(refl, clear, fit)[0, 0, 32]
    near, mid, deep = f[100].item(), f[105].item(), f[140].item()
    # measured 0.23 (a box moved 1-5 px crosses into the next field near its edges), 0.62
    # and 1.10
    assert near < 0.3
    assert near + 0.2 < mid < deep <= 1.5
    assert f[0].item() == near  # every clear pixel: the first box's share
    alone = fill_factor(refl, torch.zeros_like(clear), fit)
    assert torch.equal(alone, torch.ones_like(alone))  # nothing to check: 1
    noise = (0.01 * torch.randn(h, w, generator=g))[None, None].double()
    white = fill_factor(noise, clear, fit)[0, 0, 32, 100].item()
    assert 0.95 < white < 1.25  # measured 1.02: the mean of its neighbours adds their noise


def test_the_prior_counts_as_a_feature_and_too_few_clear_pixels_leave_the_error_alone() -> None:
    """SCO: a hidden patch whose prior is unlike the clear pixels' priors is extrapolated
    (its SAR alike); a sample with fewer than min_px clear pixels keeps factor 1."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 64, 64, generator=g)  # SAR (2), band + mask, prior (1)
    sl = input_slices("SCO", 5, 1)
    x[:, 3] = 0.0
    x[0, 3, 24:40, 24:40] = 1.0
    x[0, 4, 24:40, 24:40] += 8.0  # the patch's prior: far off
    x[1, 3] = 1.0
    x[1, 3, :5, :5] = 0.0  # 25 clear pixels
    got = _factor(x, sl, min_px=64)
    assert got[0, 0, 28:36, 28:36].median() > 3.0  # 8 sd in one of 5 independent features
    assert torch.equal(got[1], torch.ones_like(got[1]))
