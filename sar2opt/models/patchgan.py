"""pix2pix PatchGAN discriminator: judges realism per overlapping patch, not per image.

Conditioned on the SAR input (concat of sar and optical), so it penalises optical output
that is plausible but does not match the SAR. With n_layers=3 each output logit sees a
70x70 px receptive field.
"""

from __future__ import annotations

import torch
from torch import nn

from sar2opt.config import ModelSpec


def receptive_field(n_layers: int) -> int:
    """Receptive field (px) of one logit: 4x4 kernels, n_layers at stride 2, then two at 1."""
    rf = 1
    for stride in reversed([2] * n_layers + [1, 1]):
        rf = rf * stride + (4 - stride)
    return rf


class PatchGANDiscriminator(nn.Module):
    """(sar, opt) -> logits (N, 1, h, w), one per receptive-field patch; in_ch = Cs + Co."""

    def __init__(self, in_ch: int, ndf: int = 16, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = ndf
        for n in range(1, n_layers + 1):
            nxt = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ch, nxt, 4, stride, 1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.LeakyReLU(0.2),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int) -> PatchGANDiscriminator:
        return cls(in_ch, ndf=spec.ndf)

    def forward(self, sar: torch.Tensor, opt: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([sar, opt], dim=1))
