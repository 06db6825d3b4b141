"""Residual over a per-pixel reference: the model is its reference before training, the scene
fit is the ridge baseline's fit, the config says which input set a reference needs, and a
checkpoint and the inference predictor keep it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sar2opt import config
from sar2opt.config import Config, ModelSpec, config_from_dict, config_to_dict
from sar2opt.data.inputs import input_channels, model_input, normalise_input
from sar2opt.errors import ConfigError
from sar2opt.evaluate.baselines import fit_ridge as np_fit_ridge
from sar2opt.evaluate.baselines import fit_sar_ridge
from sar2opt.infer.predictor import TilePredictor
from sar2opt.models import GENERATORS, build_generator
from sar2opt.models.reference import (
    FILL_BOXES_PX,
    REFERENCES,
    SAT_FROM_PX,
    ReferenceGenerator,
    box_sum,
    fill_residual,
    min_clear_px,
    sar_features,
    scene_fit,
)
from sar2opt.train.checkpoint import load_generator, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CS, CO = 2, 4  # VV, VH -> B02 B03 B04 B08
NORM = {
    "sar_mean": [-10.0, -16.0],
    "sar_std": [3.0, 3.5],
    "opt_mean": [0.03, 0.05, 0.04, 0.3],
    "opt_std": [0.01, 0.02, 0.02, 0.05],
}


def _spec(input_set: str, reference: str, generator: str = "unet", **kw) -> ModelSpec:
    return ModelSpec(
        generator=generator, input_set=input_set, reference=reference, ngf=8, depth=3, **kw
    )


def _model(input_set: str, reference: str, generator: str = "unet", **kw) -> torch.nn.Module:
    in_ch, dem_ch = input_channels(input_set, CS, CO)
    return build_generator(_spec(input_set, reference, generator, **kw), in_ch, CO, dem_ch)


def _linear_scene(n: int = 2, h: int = 32, w: int = 32, seed: int = 0):
    """Standardised SAR, and reflectance exactly linear in VV, VH (per sample its own map)."""
    g = torch.Generator().manual_seed(seed)
    sar = torch.randn(n, CS, h, w, generator=g)
    a = torch.randn(n, CO, CS, generator=g)
    b = torch.randn(n, CO, 1, 1, generator=g)
    refl = torch.einsum("ncs,nshw->nchw", a, sar) + b
    return sar, refl


def _input(sar, refl, clear, prior=None) -> torch.Tensor:
    """The model input of SC / SCO: sar, cloudy (reflectance, 0 where masked, then the mask),
    prior."""
    mask = (~clear).float()[:, None]
    cloudy = torch.cat([torch.where(clear[:, None], refl, torch.zeros(())), mask], dim=1)
    return torch.cat([sar, cloudy] + ([prior] if prior is not None else []), dim=1)


@pytest.mark.parametrize("generator", list(GENERATORS))
@pytest.mark.parametrize("refine", ["none", "restormer"])
def test_an_untrained_model_is_exactly_its_reference(generator, refine) -> None:
    torch.manual_seed(0)
    for input_set, reference in (("SCOD", "prior"), ("SCOD", "scene_fit"), ("SC", "scene_fit")):
        model = _model(input_set, reference, generator, refine=refine, dem_fusion="late").eval()
        assert isinstance(model, ReferenceGenerator)
        x = torch.randn(2, input_channels(input_set, CS, CO)[0], 32, 32)
        x[:, CS + CO] = (torch.rand(2, 32, 32) > 0.3).float()  # the cloud mask channel
        with torch.no_grad():
            y, ref = model(x), model.reference(x)
        assert torch.equal(y, ref)
        if reference == "prior":  # the prior's channels, after sar and cloudy
            assert torch.equal(ref, x[:, CS + CO + 1 : CS + 2 * CO + 1])
        else:
            assert not torch.equal(ref, torch.zeros_like(ref))


def test_scene_fit_recovers_a_linear_map_on_clear_pixels_and_ignores_masked_ones() -> None:
    sar, refl = _linear_scene()
    clear = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    garbage = torch.where(clear[:, None], refl, torch.full_like(refl, 50.0))  # clouds
    fit = scene_fit(sar, garbage, clear, alpha=1e-9)
    torch.testing.assert_close(fit, refl.double(), atol=1e-6, rtol=0)  # everywhere
    # through the model (default alpha: a light shrinkage), cloudy values zeroed as inputs are
    model = _model("SC", "scene_fit").eval()
    with torch.no_grad():
        y = model(_input(sar, refl, clear))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, refl, atol=0.02, rtol=0)
    # one masked pixel's value changes nothing; one clear pixel's does
    bump = refl.clone()
    bump[0, :, ~clear[0]] += 10.0
    torch.testing.assert_close(scene_fit(sar, bump, clear), scene_fit(sar, refl, clear))
    bump[0, :, clear[0]] += torch.linspace(0, 3, int(clear[0].sum()))
    assert not torch.allclose(scene_fit(sar, bump, clear)[0], scene_fit(sar, refl, clear)[0])


def test_with_a_prior_the_scene_fit_recolours_it_to_the_date() -> None:
    """SCO/SCOD: the prior is a feature of the fit. A date that is the prior recoloured
    (gain and offset per band, as season and haze do) plus a SAR term is recovered under
    the clouds; SAR alone (SC) cannot see the prior's texture."""
    sar, lin = _linear_scene(n=2)
    g = torch.Generator().manual_seed(5)
    prior = torch.randn(2, CO, 32, 32, generator=g)
    gain = 0.5 + torch.rand(2, CO, 1, 1, generator=g)
    refl = gain * prior + 0.3 * lin
    clear = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(2)) > 0.6
    hidden = ~clear[:, None].expand_as(refl)
    fit = scene_fit(sar, refl, clear, alpha=1e-9, extra=prior)
    torch.testing.assert_close(fit, refl.double(), atol=1e-6, rtol=0)
    with torch.no_grad():
        y_sco = _model("SCO", "scene_fit").eval()(_input(sar, refl, clear, prior))
        y_sc = _model("SC", "scene_fit").eval()(_input(sar, refl, clear))
    err_sco = (y_sco - refl).abs()[hidden].mean().item()
    err_sc = (y_sc - refl).abs()[hidden].mean().item()
    assert err_sco < 0.05 and err_sc > 10 * err_sco


def test_pixels_without_a_prior_are_fitted_whatever_the_training_mean() -> None:
    """Where no clear S2 lies within prior_days the standardised prior is 0, the training
    mean of whichever cubes the model saw. The fit must not move with that mean: standardised
    with two different means, the same scene gives the same reference in reflectance."""
    sar, lin = _linear_scene(n=1)
    g = torch.Generator().manual_seed(7)
    prior = 0.1 + 0.05 * torch.randn(1, CO, 32, 32, generator=g)
    missing = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    missing[..., :, :20] = True  # no prior on the left 60 %
    # the date: the prior recoloured where there is one, its own level where there is none
    refl = torch.where(missing, torch.full_like(prior, 0.2), 1.2 * prior) + 0.02 * lin
    clear = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.4
    fits = []
    for mean in (0.05, 0.3):  # the optical standardisation: (v - mean) / 0.1
        p = torch.where(missing, torch.zeros(()), (prior - mean) / 0.1)
        fits.append(scene_fit(sar, (refl - mean) / 0.1, clear, p, extra=p) * 0.1 + mean)
    torch.testing.assert_close(fits[0], fits[1], atol=2e-4, rtol=0)
    err = (fits[0] - refl).abs()[~clear[:, None].expand_as(refl)].mean().item()
    assert err < 0.01


def test_too_few_clear_pixels_fall_back_to_the_prior_or_the_band_mean() -> None:
    sar, refl = _linear_scene(n=3)
    prior = torch.randn(3, CO, 32, 32)
    clear = torch.zeros(3, 32, 32, dtype=torch.bool)
    clear[0] = True  # sample 0: all clear; 1: none; 2: one short of the minimum
    need = min_clear_px(32, 32)
    assert need == 103  # 10 % of 32 x 32
    clear[2].view(-1)[: need - 1] = True
    with torch.no_grad():
        y_sco = _model("SCO", "scene_fit").eval()(_input(sar, refl, clear, prior))
        y_sc = _model("SC", "scene_fit").eval()(_input(sar, refl, clear))
    torch.testing.assert_close(y_sco[0], refl[0], atol=0.02, rtol=0)
    assert torch.equal(y_sco[1], prior[1])  # no clear pixel: no residual to spread
    assert torch.equal(y_sc[1], torch.zeros_like(y_sc[1]))
    # too few to fit: the fallback, with its residual on those few spread into the gaps
    for y, fallback in ((y_sco, prior), (y_sc, torch.zeros_like(prior))):
        want = fill_residual(fallback[2:].double(), refl[2:], clear[2:])[0].float()
        torch.testing.assert_close(y[2], want)
        assert not torch.equal(y[2], fallback[2])
    # SCO's fit also has the prior as a feature: on a date linear in the SAR it adds ~nothing
    torch.testing.assert_close(y_sc[0], y_sco[0], atol=1e-3, rtol=0)
    clear[2].view(-1)[need - 1] = True  # exactly the minimum: fitted
    fit = scene_fit(sar, refl, clear, prior)
    assert not torch.equal(fit[2], prior[2].double())
    assert torch.isfinite(fit).all()


def test_gradients_reach_the_net_only_and_training_moves_it_off_the_reference() -> None:
    torch.manual_seed(0)
    model = _model("SCO", "scene_fit")
    assert all(name.startswith("net.") for name, _ in model.named_parameters())
    sar, refl = _linear_scene(n=4)
    clear = torch.ones(4, 32, 32, dtype=torch.bool)
    x = _input(sar, refl, clear, torch.randn(4, CO, 32, 32)).requires_grad_(True)
    target = refl + 0.5 * torch.sin(sar[:, :1] * 3)  # texture a linear fit misses
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    ref0 = model.reference(x)
    assert not ref0.requires_grad
    loss = (model(x) - target).abs().mean()
    loss.backward()
    last = model.net.ups[-1][-1]
    assert last.weight.grad.abs().sum() > 0  # the zeroed output conv learns first
    # the input's gradient is the net's alone: the reference is a constant (the net sees it
    # ahead of the input, as a constant too)
    x2 = x.detach().clone().requires_grad_(True)
    (model.net(torch.cat([ref0, x2], 1)) - target + ref0).abs().mean().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    first = (model(x) - target).abs().mean().item()
    for _ in range(30):
        opt.zero_grad()
        (model(x) - target).abs().mean().backward()
        opt.step()
    assert (model(x) - target).abs().mean().item() < 0.8 * first
    torch.testing.assert_close(model.reference(x), ref0)


def test_the_baseline_ridge_and_the_scene_fit_are_one_fit() -> None:
    """evaluate.baselines' per-date ridge (numpy) = the model's scene fit (torch), in dB."""
    rng = np.random.default_rng(0)
    sar_db = np.stack([rng.uniform(-14, -6, (24, 20)), rng.uniform(-22, -14, (24, 20))])
    feats = sar_features(torch.from_numpy(sar_db)).numpy()
    truth = np.einsum("cf,fhw->chw", rng.normal(size=(CO, 6)) * 0.01, feats)
    truth += rng.normal(scale=0.005, size=truth.shape)  # not exactly linear: alpha matters
    mask = rng.random((24, 20)) > 0.4
    baseline = fit_sar_ridge(sar_db[None], truth[None], mask[None], alpha=1.0).predict(sar_db[None])
    ours = scene_fit(
        torch.from_numpy(sar_db)[None], torch.from_numpy(truth)[None], torch.from_numpy(mask)[None]
    )
    np.testing.assert_allclose(baseline, ours.numpy(), rtol=1e-6, atol=1e-7)  # float32 out
    # and the fit is the textbook closed form on standardised features (the baseline's maths)
    x, y = feats[:, mask], truth[:, mask]
    mu, sd = x.mean(1), x.std(1)
    z = (x - mu[:, None]) / sd[:, None]
    coef = np.linalg.solve(z @ z.T + 1.0 * np.eye(6), z @ (y - y.mean(1, keepdims=True)).T)
    fit = np_fit_ridge(x, y, alpha=1.0)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.intercept, y.mean(1), rtol=1e-12)


def test_config_says_which_input_set_a_reference_needs() -> None:
    assert REFERENCES == config.REFERENCE_NAMES
    assert ModelSpec().reference == "none"

    def load(input_set: str, reference: str) -> Config:
        return config_from_dict({"model": {"input_set": input_set, "reference": reference}})

    for input_set in ("SO", "SOD", "SCO", "SCOD"):
        assert load(input_set, "prior").model.reference == "prior"
    for input_set in ("SC", "SCO", "SCOD"):
        assert load(input_set, "scene_fit").model.reference == "scene_fit"
    for input_set in config.INPUT_SET_NAMES:
        assert load(input_set, "none").model.reference == "none"
    for input_set in ("S", "SD", "SC"):
        with pytest.raises(ConfigError, match="reads a prior.*use model.input_set SO, SOD, SCO"):
            load(input_set, "prior")
    for input_set in ("S", "SD", "SO", "SOD"):
        with pytest.raises(ConfigError, match="reads a same-date S2.*input_set SC, SCO or SCOD"):
            load(input_set, "scene_fit")
    with pytest.raises(ConfigError, match="unknown model.reference 'ridge'"):
        load("SCO", "ridge")


def _meta(spec: ModelSpec) -> dict:
    return {
        "model": config_to_dict(spec),
        "in_bands": ["vv", "vh"],
        "out_bands": ["B02", "B03", "B04", "B08"],
        "norm": NORM,
        "input_set": spec.input_set,
    }


def test_a_checkpoint_keeps_the_reference_and_old_ones_load_without(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = _spec("SCO", "scene_fit")
    model = _model("SCO", "scene_fit")
    for p in model.parameters():  # a trained net: its output is no longer zero
        p.data.add_(0.01 * torch.randn_like(p))
    model.eval()
    sar, refl = _linear_scene()
    x = _input(sar, refl, torch.rand(2, 32, 32) > 0.5, torch.randn(2, CO, 32, 32))
    with torch.no_grad():
        want = model(x)
    assert not torch.equal(want, model.reference(x))
    save_checkpoint(tmp_path / "a", model, _meta(spec))
    loaded, meta = load_generator(tmp_path / "a")
    assert isinstance(loaded, ReferenceGenerator) and loaded.kind == "scene_fit"
    assert meta["model"]["reference"] == "scene_fit"
    with torch.no_grad():
        assert torch.equal(loaded(x), want)

    old = _spec("SCO", "none")
    plain = _model("SCO", "none")
    meta = _meta(old)
    del meta["model"]["reference"]  # a checkpoint written before references existed
    save_checkpoint(tmp_path / "b", plain, meta)
    loaded, _ = load_generator(tmp_path / "b")
    assert not isinstance(loaded, ReferenceGenerator)


@pytest.mark.parametrize(("input_set", "reference"), [("SO", "prior"), ("SCO", "scene_fit")])
def test_the_predictor_gives_the_model_of_the_training_patch(input_set, reference) -> None:
    """Physical inputs through the inference predictor = the model called on what training
    feeds it (``normalise_input`` per key, ``model_input``), denormalised; and TTA flips
    agree with it (the scene fit does not depend on orientation)."""
    torch.manual_seed(0)
    model = _model(input_set, reference)
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    model.eval()
    rng = np.random.default_rng(0)
    b, h, w = 2, 32, 32
    sar = np.stack([rng.uniform(-14, -6, (b, h, w)), rng.uniform(-22, -14, (b, h, w))], axis=1)
    opt = 0.03 + 0.002 * (sar[:, :1] + 10) + rng.normal(0, 0.003, (b, CO, h, w))
    cloud = rng.random((b, 1, h, w)) > 0.6
    batch = {
        "sar": sar.astype(np.float32),
        "cloudy": np.concatenate([np.where(cloud, 0.4, opt), cloud], axis=1).astype(np.float32),
        "prior": (opt + rng.normal(0, 0.003, opt.shape)).astype(np.float32),
    }
    keys = ("sar", "prior") if input_set == "SO" else ("sar", "cloudy", "prior")
    train = {k: torch.from_numpy(normalise_input(k, batch[k], NORM)) for k in keys}
    with torch.no_grad():
        y = model(model_input(train, input_set)).numpy()
    want = y * np.array(NORM["opt_std"])[:, None, None] + np.array(NORM["opt_mean"])[:, None, None]
    meta = _meta(_spec(input_set, reference))
    got = TilePredictor.from_model(model, meta)({k: batch[k] for k in keys})["pred"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # an untrained model is its reference, which flips leave as they are: TTA changes nothing
    fresh = _model(input_set, reference).eval()
    one = TilePredictor.from_model(fresh, meta)({k: batch[k] for k in keys})["pred"]
    four = TilePredictor.from_model(fresh, meta, flips=4)({k: batch[k] for k in keys})["pred"]
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one, got, rtol=1e-5, atol=1e-6)  # the trained net did add to it


def test_the_fill_spreads_the_fits_residual_from_the_nearest_clear_pixels() -> None:
    """Regression kriging by hand: a clear field whose colour the fit misses by +0.3 beside
    one it misses by -0.2, a gap over their border. A gap pixel takes the mean residual of
    the clear pixels in its 5-px box; a pixel with none there the 17-px box's (the 65-px
    box weighs 1e-3 of it, counted too); one beyond every box's reach keeps the fit."""
    h, w = 40, 200
    fit = torch.zeros(1, 1, h, w, dtype=torch.float64)
    refl = torch.full((1, 1, h, w), 0.3, dtype=torch.float64)
    refl[..., 100:] = -0.2
    clear = torch.ones(1, h, w, dtype=torch.bool)
    clear[:, :, 90:110] = False  # the gap: columns 90-109
    out = fill_residual(fit, refl, clear)[0, 0]
    assert FILL_BOXES_PX == (5, 17, 65)
    # column 88 is clear, and so are its 5- and 17-px boxes (+0.3); the 65-px box, weighed
    # 1e-6 of them, reaches the other field
    assert out[20, 88].item() == pytest.approx(0.3, abs=1e-6)
    # column 91: the 5-px box (columns 89-93, rows 18-22) holds column 89; the 17-px box
    # (83-99) columns 83-89; the 65-px box (59-123, every row) 59-89 and 110-123
    n5, n17, n65 = 5, 7 * 17, 45 * 40
    r65 = (31 * 0.3 - 14 * 0.2) / 45
    a5, a17, a65 = n5 / 5**2, 1e-3 * n17 / 17**2, 1e-6 * n65 / 65**2
    want = (a5 * 0.3 + a17 * 0.3 + a65 * r65) / (a5 + a17 + a65)
    assert out[20, 91].item() == pytest.approx(want, rel=1e-9)
    # column 99: no clear pixel in its 5- or 17-px box; the 65-px box (67-131): 23 columns
    # of one field, 22 of the other
    assert out[20, 99].item() == pytest.approx((23 * 0.3 - 22 * 0.2) / 45, rel=1e-9)
    # far from every clear pixel: the fit alone
    far = torch.zeros(1, 1, h, 300, dtype=torch.float64)
    c = torch.zeros(1, h, 300, dtype=torch.bool)
    c[..., :5] = True
    got = fill_residual(far, torch.ones_like(far), c)[0, 0, 20]
    assert got[36].item() == pytest.approx(1.0) and got[37].item() == 0.0  # reach 32 px


def test_box_sums_equal_direct_sums_on_either_side_of_the_summed_area_switch() -> None:
    """Two 1-D passes below SAT_FROM_PX, a summed-area table from it: both are the sum over
    the box cut at the edges (a box wider than the image too); 0/1 counts stay integers."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 23, 41, dtype=torch.float64, generator=g)
    for win in (5, SAT_FROM_PX - 2, SAT_FROM_PX, 65):
        r = win // 2
        want = torch.zeros_like(v)
        for i in range(23):
            for j in range(41):
                want[..., i, j] = v[..., max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1].sum(
                    (-2, -1)
                )
        torch.testing.assert_close(box_sum(v, win), want, rtol=0, atol=1e-12)
        ones = (v > 0).double()
        assert torch.equal(box_sum(ones, win), box_sum(ones, win).round())
