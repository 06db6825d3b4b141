"""pix2pix U-Net generator (Isola et al. 2017), output linear in normalised units.

Encoder: ``depth`` stride-2 4x4 convs (norm + LeakyReLU 0.2), channels ngf * min(2**i, 8).
Decoder: stride-2 transposed convs (norm + ReLU) each concatenated with the encoder skip of
the same resolution, so fine SAR structure reaches the output without passing the bottleneck.
The output is linear (no tanh) because targets are standardised reflectance, not [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from sar2opt.config import ModelSpec


def _norm(ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch)


class UNetGenerator(nn.Module):
    """SAR (N, in_ch, H, W) -> optical (N, out_ch, H, W); H and W multiples of 2**depth."""

    def __init__(
        self, in_ch: int, out_ch: int, ngf: int = 16, depth: int = 5, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.stride = 2**depth
        chs = [ngf * min(2**i, 8) for i in range(depth)]

        downs: list[nn.Module] = [nn.Conv2d(in_ch, chs[0], 4, 2, 1)]
        for i in range(1, depth):
            innermost = i == depth - 1
            layers = [nn.LeakyReLU(0.2), nn.Conv2d(chs[i - 1], chs[i], 4, 2, 1, bias=innermost)]
            if not innermost:  # the bottleneck may be 1x1: nothing to normalise over
                layers.append(_norm(chs[i]))
            downs.append(nn.Sequential(*layers))
        self.downs = nn.ModuleList(downs)

        ups: list[nn.Module] = []
        for i in reversed(range(depth)):  # i: the encoder level this block upsamples from
            in_c = chs[i] if i == depth - 1 else 2 * chs[i]
            if i == 0:
                ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(in_c, out_ch, 4, 2, 1)))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(in_c, chs[i - 1], 4, 2, 1, bias=False)]
            layers.append(_norm(chs[i - 1]))
            if dropout > 0 and i >= depth - 3:  # the three innermost decoder levels, as pix2pix
                layers.append(nn.Dropout(dropout))
            ups.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList(ups)

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> UNetGenerator:
        """pix2pix defaults: ngf 64, depth 8 at 256 px (1x1 bottleneck), dropout 0.5."""
        return cls(in_ch, out_ch, ngf=spec.ngf, depth=spec.depth, dropout=spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2**self.depth
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(
                f"U-Net of depth {self.depth} needs H and W multiples of {f}, got {tuple(x.shape)}"
            )
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        for k, up in enumerate(self.ups):
            i = self.depth - 1 - k
            h = up(h)
            if i > 0:
                h = torch.cat([h, skips[i - 1]], dim=1)
        return h
