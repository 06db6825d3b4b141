"""Loss functions (pure): masked L1, the GAN loss and a weighted MSE+MAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sar2opt.config import GAN_MODES


def _masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of err (N, C, H, W) over pixels with mask (N, 1, H, W) > 0, all channels."""
    if mask is None:
        return err.mean()
    m = (mask > 0).to(err.dtype)
    denom = (m.sum() * err.shape[1]).clamp_min(1.0)
    return (err * m).sum() / denom


def l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error on clear pixels only: cloudy target pixels carry no signal."""
    return _masked_mean((pred - target).abs(), mask)


def gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Vanilla (BCE-with-logits) GAN loss against an all-real or all-fake label map."""
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def weighted_mse_mae(
    pred: torch.Tensor,
    target: torch.Tensor,
    w_mse: float,
    w_mae: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """w_mse * MSE + w_mae * MAE: MSE punishes large colour errors, MAE keeps edges sharp."""
    d = pred - target
    return w_mse * _masked_mean(d * d, mask) + w_mae * _masked_mean(d.abs(), mask)


def adversarial_loss(
    logits: torch.Tensor, target_is_real: bool, mode: str = "vanilla", for_d: bool = True
) -> torch.Tensor:
    """GAN loss by mode: vanilla BCE (pix2pix), least squares (pix2pixHD), hinge (SPADE).

    Hinge is asymmetric: D gets max(0, 1 -/+ logits), G simply -mean(logits).
    """
    if mode == "vanilla":
        return gan_loss(logits, target_is_real)
    if mode == "lsgan":
        return ((logits - (1.0 if target_is_real else 0.0)) ** 2).mean()
    if mode == "hinge":
        if not for_d:
            return -logits.mean()
        return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()
    raise ValueError(f"unknown gan mode {mode!r}; choices: {', '.join(GAN_MODES)}")


def feature_matching(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """pix2pixHD feature matching: mean L1 between D's intermediate features on real and fake.

    The last entry of each scale is the logits map and is left to the adversarial loss.
    Real features are detached: this term trains G only.
    """
    terms = [
        (f - r.detach()).abs().mean()
        for rs, fs in zip(real, fake, strict=True)
        for r, f in zip(rs[:-1], fs[:-1], strict=True)
    ]
    if not terms:
        return torch.zeros((), device=real[0][0].device)
    return torch.stack(terms).mean()
