"""The GAN step updates both nets and learns a synthetic SAR->optical map; eval_step units."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sar2opt.models import PatchGANDiscriminator, UNetGenerator
from sar2opt.train.step import eval_step, gan_step

W = torch.tensor([[0.5, -0.3], [0.2, 0.4], [-0.4, 0.6], [0.8, 0.1]])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


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


def test_grad_clip_bounds_the_update() -> None:
    """With plain SGD (lr 1) the G update is the clipped gradient: its norm is grad_clip."""
    from sar2opt.train.step import LossSpec

    sar, opt = synthetic_pairs(4)
    batch = {"sar": sar, "opt": opt}
    deltas = {}
    for clip in (0.0, 1e-3):
        torch.manual_seed(0)
        gen = UNetGenerator(2, 4, ngf=8, depth=3)
        sgd = torch.optim.SGD(gen.parameters(), lr=1.0)
        p0 = torch.cat([p.detach().flatten().clone() for p in gen.parameters()])
        gan_step(gen, None, sgd, None, batch, losses=LossSpec(grad_clip=clip))
        p1 = torch.cat([p.detach().flatten() for p in gen.parameters()])
        deltas[clip] = float((p1 - p0).norm())
    assert deltas[0.0] > 0.01  # unclipped: the raw gradient norm, far above the bound
    assert deltas[1e-3] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(Exception, match="grad_clip"):
        LossSpec(grad_clip=-1.0)


def _grads(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters()])


# Two fp32 computations of the same sums in another order (NHWC kernels block and vectorise
# differently) differ by ~sqrt(terms) x 2^-24 of their size: ~1e-6 here. 1e-4 of the gradient
# norm is far above that and far below any change of the maths (a transposed input: ~1).
GRAD_RTOL = 1e-4


def test_channels_last_step_matches_contiguous() -> None:
    """The same step on NHWC tensors and weights gives the same losses and gradients.

    What the kernels guarantee is the maths up to fp32 rounding, so the test compares the
    losses and both nets' gradients with a tolerance relative to the gradient norm, not weights
    after Adam: Adam's first update is ~lr x sign(grad), so a gradient entry near 0 flips the
    update's sign on rounding noise. lr=0 keeps D's update from feeding into G's gradients.
    """
    sar, opt = synthetic_pairs(4)
    outs, grads = [], []
    for cl in (False, True):
        gen, disc, opt_g, opt_d = make_nets(lr=0.0)
        batch = {"sar": sar, "opt": opt}
        if cl:
            gen, disc = (m.to(memory_format=torch.channels_last) for m in (gen, disc))
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
            assert batch["sar"].is_contiguous(memory_format=torch.channels_last)
            assert next(gen.parameters()).is_contiguous(memory_format=torch.channels_last)
        outs.append(gan_step(gen, disc, opt_g, opt_d, batch))
        grads.append({"gen": _grads(gen), "disc": _grads(disc)})
    for k in outs[0]:
        assert outs[1][k] == pytest.approx(outs[0][k], rel=1e-5, abs=1e-7), k
    for net, g in grads[0].items():
        err = float((grads[1][net] - g).norm() / g.norm())
        assert 0 < g.norm() and err <= GRAD_RTOL, (net, err)


def test_bf16_autocast_step_on_cpu() -> None:
    """amp=True on a CPU: the forward runs in bf16 (close to fp32, not identical)."""
    from sar2opt.train.schedule import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    sar, opt = synthetic_pairs(4)
    res = {}
    for amp in (False, True):
        gen, disc, opt_g, opt_d = make_nets()
        res[amp] = gan_step(gen, disc, opt_g, opt_d, {"sar": sar, "opt": opt}, amp=amp)
    assert res[True]["g_l1"] != res[False]["g_l1"]  # bf16 rounding shows
    assert res[True]["g_l1"] == pytest.approx(res[False]["g_l1"], rel=0.05)
    assert all(torch.isfinite(torch.tensor(v)) for v in res[True].values())


def test_eval_sums_agree_with_the_evaluation_metrics() -> None:
    """Pooled over two batches, val metrics equal evaluate.metrics' MAE, PSNR and SSIM."""
    import numpy as np

    from sar2opt.evaluate import metrics as em
    from sar2opt.train.step import VAL_SUM_KEYS, eval_sums, val_metrics

    gen, *_ = make_nets()
    sar, opt = synthetic_pairs(6, seed=3)
    mask = torch.ones(6, 1, 32, 32)
    mask[1, :, :10] = 0
    mask[4, :, :, 20:] = 0
    mean, std = [0.05, 0.07, 0.06, 0.25], [0.02, 0.02, 0.03, 0.08]
    tot = dict.fromkeys(VAL_SUM_KEYS, 0.0)
    for sl in (slice(0, 4), slice(4, 6)):
        b = {"sar": sar[sl], "opt": opt[sl], "mask": mask[sl]}
        for k, v in eval_sums(gen, b, mean, std).items():
            tot[k] += v
    got = val_metrics(tot)

    with torch.no_grad():
        pred = gen.eval()(sar).numpy()
    m_, s_ = np.array(mean).reshape(1, -1, 1, 1), np.array(std).reshape(1, -1, 1, 1)
    pr, tr = pred * s_ + m_, opt.numpy() * s_ + m_
    mk = mask[:, 0].numpy() > 0
    # Patches side by side along y: one (C, 6*32, 32) image for the pixel metrics.
    side = [np.moveaxis(a, 1, 0).reshape(4, 6 * 32, 32) for a in (pr, tr)]
    assert got["val_mae_refl"] == pytest.approx(em.mae(*side, mk.reshape(-1, 32)), rel=1e-5)
    assert got["val_psnr_db"] == pytest.approx(em.psnr(*side, mk.reshape(-1, 32)), rel=1e-5)
    maps = np.stack([em.ssim_map(pr[i], tr[i], mk[i]) for i in range(6)])
    assert got["val_ssim"] == pytest.approx(float(np.nanmean(maps)), rel=1e-6)
    assert 0 < got["val_ssim"] < 1 and got["val_psnr_db"] > 10
