"""Loss functions (pure): masked L1, the GAN loss and a weighted MSE+MAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
