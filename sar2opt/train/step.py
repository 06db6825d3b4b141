"""One pix2pix optimisation step and one evaluation step, pure functions of their arguments.

Kept free of Ray so they are unit-testable; the Ray Train loop only adds data, DDP and
reporting around them. Works the same on DDP-wrapped and plain modules.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from sar2opt.data.normalise import denormalise
from sar2opt.models.losses import gan_loss, l1_loss


def _autocast(x: torch.Tensor, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op otherwise."""
    if enabled and x.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def gan_step(
    gen: nn.Module,
    disc: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    lambda_l1: float,
    *,
    amp: bool = False,
) -> dict[str, float]:
    """Update D on (real, fake), then G on adversarial + lambda_l1 * masked L1.

    ``batch`` holds normalised ``sar`` (N, Cs, H, W), ``opt`` (N, Co, H, W) and ``mask``
    (N, 1, H, W). Returns d_loss, g_adv, g_l1, g_total as floats.
    """
    sar, opt, mask = batch["sar"], batch["opt"], batch.get("mask")
    gen.train()
    disc.train()
    with _autocast(sar, amp):
        fake = gen(sar)

    # Discriminator: real pairs -> 1, generated pairs -> 0. fake is detached: no G gradient.
    opt_d.zero_grad(set_to_none=True)
    with _autocast(sar, amp):
        d_real = disc(sar, opt)
        d_fake = disc(sar, fake.detach())
        d_loss = 0.5 * (gan_loss(d_real.float(), True) + gan_loss(d_fake.float(), False))
    d_loss.backward()
    opt_d.step()

    # Generator: fool D and match the clear pixels. D's grads from this pass are discarded
    # (zeroed before its next step); its requires_grad is not toggled, which DDP dislikes.
    opt_g.zero_grad(set_to_none=True)
    with _autocast(sar, amp):
        g_adv = gan_loss(disc(sar, fake).float(), True)
    g_l1 = l1_loss(fake.float(), opt, mask)
    g_total = g_adv + lambda_l1 * g_l1
    g_total.backward()
    opt_g.step()
    return {
        "d_loss": float(d_loss.detach()),
        "g_adv": float(g_adv.detach()),
        "g_l1": float(g_l1.detach()),
        "g_total": float(g_total.detach()),
    }


@torch.no_grad()
def eval_step(
    gen: nn.Module,
    batch: dict[str, torch.Tensor],
    opt_mean: object | None = None,
    opt_std: object | None = None,
) -> dict[str, float]:
    """Masked L1 in normalised units, and MAE in reflectance when the optical stats are given.

    Also returns ``n_px`` (clear pixels x bands) so callers can average batches and workers
    by weight. Runs the generator in eval mode and restores its previous mode.
    """
    sar, opt, mask = batch["sar"], batch["opt"], batch.get("mask")
    was_training = gen.training
    gen.eval()
    try:
        pred = gen(sar).float()
    finally:
        gen.train(was_training)
    m = torch.ones_like(opt[:, :1]) if mask is None else (mask > 0).to(opt.dtype)
    out = {
        "l1": float(l1_loss(pred, opt, m)),
        "n_px": float(m.sum()) * opt.shape[1],
    }
    if opt_mean is not None and opt_std is not None:
        pred_r = denormalise(pred, opt_mean, opt_std)
        opt_r = denormalise(opt, opt_mean, opt_std)
        out["mae_refl"] = float(l1_loss(pred_r, opt_r, m))
    return out
