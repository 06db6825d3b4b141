"""The GAN step updates both nets and learns a synthetic SAR->optical map; eval_step units."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sar2opt.models import PatchGANDiscriminator, UNetGenerator
from sar2opt.train.step import eval_step, gan_step

W = torch.tensor([[0.5, -0.3], [0.2, 0.4], [-0.4, 0.6], [0.8, 0.1]])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on shared cores, intra-op threads cost far more than they give."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_pairs(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random 'SAR' and optical = fixed linear band mix of it, then a 5x5 blur."""
    g = torch.Generator().manual_seed(seed)
    sar = 2 * F.avg_pool2d(torch.randn(n, 2, size, size, generator=g), 3, 1, 1)
    opt = F.avg_pool2d(torch.einsum("oc,nchw->nohw", W, sar), 5, 1, 2)
    return sar, opt


def make_nets(lr: float = 1e-3) -> tuple:
    torch.manual_seed(0)
    gen, disc = UNetGenerator(2, 4, ngf=8, depth=3), PatchGANDiscriminator(6, ndf=8)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    return gen, disc, opt_g, opt_d


def test_gan_step_updates_both_nets() -> None:
    gen, disc, opt_g, opt_d = make_nets()
    sar, opt = synthetic_pairs(4)
    g0 = [p.detach().clone() for p in gen.parameters()]
    d0 = [p.detach().clone() for p in disc.parameters()]
    out = gan_step(gen, disc, opt_g, opt_d, {"sar": sar, "opt": opt}, lambda_l1=100.0)
    assert set(out) == {"d_loss", "g_adv", "g_fm", "g_rec", "g_l1", "g_total"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["g_total"] == pytest.approx(out["g_adv"] + 100.0 * out["g_l1"], rel=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(g0, gen.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d0, disc.parameters(), strict=True))


def test_gan_step_learns_synthetic_map() -> None:
    gen, disc, opt_g, opt_d = make_nets()
    sar, opt = synthetic_pairs(64)
    mask = torch.ones(64, 1, 32, 32)
    rng = torch.Generator().manual_seed(1)
    l1s = []
    for _ in range(100):
        i = torch.randint(0, 64, (8,), generator=rng)
        batch = {"sar": sar[i], "opt": opt[i], "mask": mask[i]}
        l1s.append(gan_step(gen, disc, opt_g, opt_d, batch, lambda_l1=100.0)["g_l1"])
    start, end = sum(l1s[:5]) / 5, sum(l1s[-5:]) / 5
    assert end < 0.5 * start, (start, end)
    # Held-out pairs: the map generalises, it is not memorised.
    sar_t, opt_t = synthetic_pairs(16, seed=7)
    assert eval_step(gen, {"sar": sar_t, "opt": opt_t})["l1"] < 0.5 * start


def test_masked_pixels_do_not_drive_l1() -> None:
    gen, disc, opt_g, opt_d = make_nets()
    sar, opt = synthetic_pairs(2)
    mask = torch.ones(2, 1, 32, 32)
    mask[:, :, :16] = 0
    cloudy = opt.clone()
    cloudy[:, :, :16] = 1e3  # clouds: huge values where the mask is 0
    a = eval_step(gen, {"sar": sar, "opt": opt, "mask": mask})
    b = eval_step(gen, {"sar": sar, "opt": cloudy, "mask": mask})
    assert a["l1"] == pytest.approx(b["l1"])
    assert a["n_px"] == 2 * 16 * 32 * 4


def test_eval_step_reflectance_mae_and_mode() -> None:
    gen, *_ = make_nets()
    gen.train()
    sar, opt = synthetic_pairs(2)
    mean, std = [0.1, 0.1, 0.1, 0.3], [0.05, 0.05, 0.05, 0.1]
    out = eval_step(gen, {"sar": sar, "opt": opt}, mean, std)
    assert gen.training  # mode restored
    # MAE in reflectance = normalised error x per-band std, averaged over bands
    with torch.no_grad():
        err = (gen.eval()(sar) - opt).abs().mean(dim=(0, 2, 3))
    want = float((err * torch.tensor(std)).mean())
    assert out["mae_refl"] == pytest.approx(want, rel=1e-4)


def test_d_every_other_step_and_mse_mae() -> None:
    from sar2opt.train.step import LossSpec

    gen, disc, opt_g, opt_d = make_nets()
    sar, opt = synthetic_pairs(4)
    batch = {"sar": sar, "opt": opt}
    losses = LossSpec(loss="mse_mae", w_mse=2.0, w_mae=0.5, d_every=2)
    d0 = [p.detach().clone() for p in disc.parameters()]
    out = gan_step(gen, disc, opt_g, opt_d, batch, step=1, losses=losses)
    assert all(torch.equal(a, b) for a, b in zip(d0, disc.parameters(), strict=True))
    assert out["d_loss"] > 0  # still reported, computed without a D update
    # The reconstruction term is 2 * MSE + 0.5 * MAE of the output before the G update.
    assert out["g_total"] == pytest.approx(out["g_adv"] + 100.0 * out["g_rec"], rel=1e-5)
    out = gan_step(gen, disc, opt_g, opt_d, batch, step=2, losses=losses)
    assert all(not torch.equal(a, b) for a, b in zip(d0, disc.parameters(), strict=True))
    # Non-adversarial step: g_rec is exactly 2 * MSE + 0.5 * MAE of the untrained output.
    gen2, _, opt_g2, _ = make_nets()
    with torch.no_grad():
        d = gen2(sar) - opt
    rec = gan_step(gen2, None, opt_g2, None, batch, losses=losses)["g_rec"]
    assert rec == pytest.approx(float(2.0 * (d * d).mean() + 0.5 * d.abs().mean()), rel=1e-4)


def test_multiscale_feature_matching_and_no_discriminator() -> None:
    from sar2opt.models import MultiscaleDiscriminator
    from sar2opt.train.step import LossSpec

    gen, _, opt_g, _ = make_nets()
    disc = MultiscaleDiscriminator(6, ndf=8, n_scales=2)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-3)
    sar, opt = synthetic_pairs(4)
    ls = LossSpec(gan_mode="lsgan", lambda_fm=10.0, lambda_l1=10.0)
    out = gan_step(gen, disc, opt_g, opt_d, {"sar": sar, "opt": opt}, losses=ls)
    assert out["g_fm"] > 0
    assert out["g_total"] == pytest.approx(
        out["g_adv"] + 10 * out["g_fm"] + 10 * out["g_rec"], rel=1e-5
    )
    out = gan_step(gen, None, opt_g, None, {"sar": sar, "opt": opt}, losses=ls)
    assert out["d_loss"] == out["g_adv"] == out["g_fm"] == 0.0
    assert out["g_total"] == out["g_rec"] == out["g_l1"]
