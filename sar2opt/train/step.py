"""One optimisation step and one evaluation step, pure functions of their arguments.

Kept free of Ray so they are unit-testable; the Ray Train loop only adds data, DDP and
reporting around them. Works the same on DDP-wrapped and plain modules, for every model of
the registry: adversarial (a discriminator) or not (``disc=None``: reconstruction only),
single- or multi-scale discriminators (the latter add feature matching), any input set.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sar2opt.config import GAN_MODES, RECON_LOSSES, TrainSpec
from sar2opt.data.inputs import MASK_CH, model_input, uses_cloudy
from sar2opt.data.normalise import denormalise
from sar2opt.errors import ConfigError
from sar2opt.models.losses import (
    adversarial_loss,
    feature_matching,
    l1_loss,
    weighted_mse_mae,
)
from sar2opt.models.reference import given_reference

LOSS_KEYS = ("d_loss", "g_adv", "g_fm", "g_rec", "g_l1", "g_total")


@dataclass(frozen=True)
class LossSpec:
    """How the step weighs its terms (the TrainSpec fields that concern one step)."""

    lambda_l1: float = 100.0  # weight of the reconstruction term beside the adversarial one
    loss: str = "l1"  # l1 | mse_mae
    w_mse: float = 1.0
    w_mae: float = 1.0
    gan_mode: str = "vanilla"
    lambda_fm: float = 10.0
    d_every: int = 1
    grad_clip: float = 0.0  # max L2 norm of each network's gradient per step; 0 = off

    def __post_init__(self) -> None:
        if self.loss not in RECON_LOSSES:
            raise ConfigError(
                f"unknown train.loss {self.loss!r}; choices: {', '.join(RECON_LOSSES)}"
            )
        if self.gan_mode not in GAN_MODES:
            raise ConfigError(f"unknown train.gan_mode {self.gan_mode!r}; choices: {GAN_MODES}")
        if self.d_every < 1:
            raise ConfigError(f"train.d_every must be >= 1, got {self.d_every}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")

    @classmethod
    def from_train(cls, tr: TrainSpec) -> LossSpec:
        """The step's share of the train spec."""
        return cls(**{k: getattr(tr, k) for k in cls.__dataclass_fields__})


def _autocast(x: torch.Tensor, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on x's device, CUDA or CPU (bf16 needs no loss scaling, unlike fp16).

    Whether bf16 is worth it on a given device is the caller's choice (``resolve_precision``
    in the loop): on a CPU without native bf16 it is emulated and slower than fp32.
    """
    if enabled and x.device.type in ("cuda", "cpu"):
        return torch.autocast(x.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clip(opt: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the total gradient norm of the optimiser's parameters (no-op when max_norm is 0)."""
    if max_norm > 0:
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def _scales(out: torch.Tensor | list) -> list[list[torch.Tensor]]:
    """Any discriminator's output as per-scale feature lists (last entry = logits)."""
    return [[out]] if isinstance(out, torch.Tensor) else out


def _adv(scales: list[list[torch.Tensor]], real: bool, mode: str, for_d: bool) -> torch.Tensor:
    return torch.stack([adversarial_loss(s[-1].float(), real, mode, for_d) for s in scales]).mean()


def scored_mask(batch: dict[str, torch.Tensor], input_set: str) -> torch.Tensor | None:
    """The pixels a batch is scored on: the clear target pixels (``mask``); for a
    cloud-removal set (SC, SCO, SCOD) only those its same-date S2 input hides (the mask
    channel of ``cloudy``: its own clouds and the laid ones). Where the input shows the
    pixel, the composite keeps the real S2 and a model only has to copy it; scoring those
    would let copying drown out the fill (on the real BioMassters chip a net trained on all
    pixels ended worse under the clouds than its own reference). A sample with nothing
    hidden adds nothing."""
    mask = batch.get("mask")
    if not uses_cloudy(input_set) or "cloudy" not in batch:
        return mask
    hidden = batch["cloudy"][:, -MASK_CH:] > 0.5
    clear = torch.ones_like(hidden) if mask is None else mask > 0
    return (clear & hidden).to(batch["opt"].dtype)


def recon_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, losses: LossSpec
) -> torch.Tensor:
    """The reconstruction term: masked L1, or w_mse * MSE + w_mae * MAE."""
    if losses.loss == "mse_mae":
        return weighted_mse_mae(pred, target, losses.w_mse, losses.w_mae, mask)
    return l1_loss(pred, target, mask)


def gan_step(
    gen: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    batch: dict[str, torch.Tensor],
    lambda_l1: float | None = None,
    *,
    amp: bool = False,
    step: int = 0,
    losses: LossSpec | None = None,
    input_set: str = "S",
) -> dict[str, float]:
    """Update D on (real, fake) when ``step % d_every == 0``, then G; return the loss dict.

    ``batch`` holds normalised ``sar`` (N, Cs, H, W), ``opt`` (N, Co, H, W), ``mask``
    (N, 1, H, W) and, per input set, ``dem`` / ``prior``. G minimises adversarial +
    lambda_fm * feature matching + lambda_l1 * reconstruction; without a discriminator,
    the reconstruction alone. Returns floats d_loss, g_adv, g_fm, g_rec (the reconstruction
    term), g_l1 (masked L1, whatever the loss) and g_total. ``lambda_l1`` overrides
    ``losses.lambda_l1`` (the skeleton's positional argument).
    """
    ls = losses or LossSpec()
    lam = ls.lambda_l1 if lambda_l1 is None else lambda_l1
    x = model_input(batch, input_set)
    opt, mask = batch["opt"], scored_mask(batch, input_set)
    gen.train()
    with _autocast(x, amp):
        fake = gen(x, **given_reference(batch))
    zero = torch.zeros((), device=x.device)
    d_loss = g_adv = g_fm = zero

    if disc is not None:
        disc.train()
        # Discriminator: real pairs -> real, generated -> fake; fake detached: no G gradient.
        update_d = step % ls.d_every == 0
        ctx = contextlib.nullcontext() if update_d else torch.no_grad()
        with ctx, _autocast(x, amp):
            d_real = _scales(disc(x, opt))
            d_fake = _scales(disc(x, fake.detach()))
            d_loss = 0.5 * (
                _adv(d_real, True, ls.gan_mode, True) + _adv(d_fake, False, ls.gan_mode, True)
            )
        if update_d:
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            _clip(opt_d, ls.grad_clip)
            opt_d.step()
        # Generator: fool D. D's grads from this pass are zeroed before its next step; its
        # requires_grad is not toggled, which DDP dislikes.
        with _autocast(x, amp):
            g_scales = _scales(disc(x, fake))
            g_adv = _adv(g_scales, True, ls.gan_mode, False)
            if len(g_scales[0]) > 1 and ls.lambda_fm > 0:
                with torch.no_grad():
                    real_feats = _scales(disc(x, opt))
                g_fm = feature_matching(real_feats, g_scales).float()

    opt_g.zero_grad(set_to_none=True)
    fake32 = fake.float()
    g_rec = recon_loss(fake32, opt, mask, ls)
    g_l1 = l1_loss(fake32.detach(), opt, mask)
    if disc is None:
        g_total = g_rec
    else:
        g_total = g_adv + ls.lambda_fm * g_fm + lam * g_rec
    g_total.backward()
    _clip(opt_g, ls.grad_clip)
    opt_g.step()
    vals = (d_loss, g_adv, g_fm, g_rec, g_l1, g_total)
    return {k: float(v.detach()) for k, v in zip(LOSS_KEYS, vals, strict=True)}


@torch.no_grad()
def eval_step(
    gen: nn.Module,
    batch: dict[str, torch.Tensor],
    opt_mean: object | None = None,
    opt_std: object | None = None,
    input_set: str = "S",
) -> dict[str, float]:
    """Masked L1 in normalised units, and MAE in reflectance when the optical stats are given.

    Also returns ``n_px`` (clear pixels x bands) so callers can average batches and workers
    by weight. Runs the generator in eval mode and restores its previous mode.
    """
    x = model_input(batch, input_set)
    opt, mask = batch["opt"], scored_mask(batch, input_set)
    was_training = gen.training
    gen.eval()
    try:
        pred = gen(x, **given_reference(batch)).float()
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


#: Sums a validation batch contributes; they add over batches and workers (all-reduce).
VAL_SUM_KEYS = ("l1", "abs_err", "sq_err", "n_px", "ssim_sum", "ssim_n")


@torch.no_grad()
def eval_sums(
    gen: nn.Module,
    batch: dict[str, torch.Tensor],
    opt_mean: object,
    opt_std: object,
    input_set: str = "S",
    amp: bool = False,
) -> dict[str, float]:
    """Additive validation sums of one batch: see :func:`val_metrics` for the metrics.

    ``l1`` (normalised units), ``abs_err`` and ``sq_err`` (reflectance) are sums over clear
    pixels x bands, ``n_px`` their count; ``ssim_sum`` / ``ssim_n`` the sum and count of the
    fully clear SSIM windows of every patch and band (``sar2opt.evaluate.metrics.ssim_map``:
    the same SSIM the evaluation reports). Sums, not means, so that batches of any size and
    any number of workers average exactly.
    """
    from sar2opt.evaluate.metrics import ssim_map

    x = model_input(batch, input_set)
    opt, mask = batch["opt"], scored_mask(batch, input_set)
    was_training = gen.training
    gen.eval()
    try:
        with _autocast(x, amp):
            pred = gen(x, **given_reference(batch))
    finally:
        gen.train(was_training)
    pred = pred.float()
    m = torch.ones_like(opt[:, :1]) if mask is None else (mask > 0).to(opt.dtype)
    pred_r = denormalise(pred, opt_mean, opt_std)
    opt_r = denormalise(opt, opt_mean, opt_std)
    err = (pred_r - opt_r) * m
    out = {
        "l1": float(((pred - opt).abs() * m).sum()),
        "abs_err": float(err.abs().sum()),
        "sq_err": float((err * err).sum()),
        "n_px": float(m.sum()) * opt.shape[1],
        "ssim_sum": 0.0,
        "ssim_n": 0.0,
    }
    p_np, t_np = pred_r.cpu().double().numpy(), opt_r.cpu().double().numpy()
    m_np = m[:, 0].cpu().numpy() > 0
    for i in range(p_np.shape[0]):
        s = ssim_map(p_np[i], t_np[i], m_np[i])
        ok = np.isfinite(s)
        out["ssim_sum"] += float(s[ok].sum())
        out["ssim_n"] += float(ok.sum())
    return out


def val_metrics(sums: dict[str, float], data_range: float = 1.0) -> dict[str, float]:
    """Validation metrics from (all-reduced) :func:`eval_sums`: ``val_l1``, ``val_mae_refl``,
    ``val_psnr_db`` (against ``data_range``, 1.0 for reflectance) and ``val_ssim``.

    PSNR comes from the pooled MSE of every clear pixel, as ``metrics.psnr`` computes it on
    the concatenated patches; NaN when there was nothing to score.
    """
    n = sums["n_px"]
    mse = sums["sq_err"] / n if n > 0 else math.nan
    if n > 0 and mse > 0:
        psnr_db = 10.0 * math.log10(data_range**2 / mse)
    else:
        psnr_db = math.inf if n > 0 else math.nan
    return {
        "val_l1": sums["l1"] / n if n > 0 else math.nan,
        "val_mae_refl": sums["abs_err"] / n if n > 0 else math.nan,
        "val_psnr_db": psnr_db,
        "val_ssim": sums["ssim_sum"] / sums["ssim_n"] if sums["ssim_n"] > 0 else math.nan,
    }
