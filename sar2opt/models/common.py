"""Pieces every generator family shares: the size contract and padding for other sizes.

Every generator has an integer ``stride``: H and W must be multiples of it (the product of
its down-sampling factors). ``forward_padded`` runs any generator on any size by reflect
padding up to the next multiple and cropping the output back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_size(x: torch.Tensor, stride: int, name: str) -> None:
    """ValueError unless H and W of ``x`` are multiples of ``stride``."""
    if x.shape[-1] % stride or x.shape[-2] % stride:
        raise ValueError(
            f"{name} needs H and W multiples of {stride}, got {tuple(x.shape)}; "
            "pad with sar2opt.models.forward_padded"
        )


def pad_amounts(h: int, w: int, stride: int) -> tuple[int, int]:
    """Rows and columns to add at the bottom/right so that H and W are multiples of stride."""
    return math.ceil(h / stride) * stride - h, math.ceil(w / stride) * stride - w


def forward_padded(gen: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``gen(x)`` for any H, W: reflect-pad to the generator's stride, crop the output back.

    Reflection (not zeros) keeps the padded border statistically like the image, so the
    crop is not darkened at its edge. Inputs smaller than the pad fall back to replicate.
    """
    h, w = x.shape[-2:]
    ph, pw = pad_amounts(h, w, int(gen.stride))
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return gen(x)[..., :h, :w]


def n_params(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
