"""Several hypotheses per input, and "best of N" scoring as in the MultiEarth challenge.

SAR does not determine optical colour uniquely (a bare field and a dry pasture can scatter
alike), so the challenge scored the best of N candidate images. Two sources of candidates:
an ensemble of generators (checkpoints from different seeds or epochs), and stochastic
outputs of one generator trained with dropout, kept on at inference (MC dropout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sar2opt.models.common import forward_padded


def _set_dropout(model: nn.Module, on: bool) -> int:
    """Dropout layers to train mode (on) or eval mode; returns how many there are."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.train(on)
            n += 1
    return n


@torch.no_grad()
def hypotheses(
    models: Sequence[nn.Module], x: torch.Tensor, samples_per_model: int = 1
) -> torch.Tensor:
    """(K, N, C, H, W): every model's output, ``samples_per_model`` dropout draws each.

    Models run in eval mode (batch norm uses running statistics) with only dropout active;
    a model without dropout asked for several samples is a ValueError (they would be equal).
    """
    outs = []
    for m in models:
        was = m.training
        m.eval()
        n_drop = _set_dropout(m, samples_per_model > 1)
        try:
            if samples_per_model > 1 and n_drop == 0:
                raise ValueError("samples_per_model > 1 needs a model with dropout > 0")
            outs += [forward_padded(m, x) for _ in range(samples_per_model)]
        finally:
            _set_dropout(m, False)
            m.train(was)
    return torch.stack(outs)


def best_of_n(
    hyps: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample, the hypothesis with the lowest masked L1 to the target.

    hyps (K, N, C, H, W), target (N, C, H, W), mask (N, 1, H, W) -> (best (N, C, H, W),
    index (N,), l1 (K, N)).
    """
    err = (hyps - target.unsqueeze(0)).abs()
    if mask is None:
        l1 = err.mean(dim=(2, 3, 4))
    else:
        m = (mask > 0).to(err.dtype).unsqueeze(0)
        l1 = (err * m).sum(dim=(2, 3, 4)) / (m.sum(dim=(2, 3, 4)) * err.shape[2]).clamp_min(1)
    idx = l1.argmin(dim=0)
    best = hyps[idx, torch.arange(hyps.shape[1])]
    return best, idx, l1
