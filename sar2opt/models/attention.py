"""Attention cGAN generator: residual blocks with an attention module in the encoder.

SAR speckle and layover make many pixels unreliable; an attention module lets each encoder
stage re-weight its channels (which SAR textures matter) and its pixels (where to look)
before the features are passed on. The module is CBAM (Woo et al. 2018): channel attention
from average- and max-pooled descriptors through a shared MLP, then spatial attention from
the channel-wise mean and max through a 7x7 conv. Trained with a PatchGAN and lambda * L1.

Layout: 7x7 stem, then per level a stride-2 conv followed by a residual block with CBAM,
``n_blocks`` attention residual blocks at the bottleneck, and a U-Net style decoder
(transposed convs with encoder skips). Output linear.
"""

from __future__ import annotations

import torch
from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.models.common import check_size


class CBAM(nn.Module):
    """x * channel_attention(x), then * spatial_attention(.) ; both gates in (0, 1)."""

    def __init__(self, ch: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(ch, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, ch, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class AttentionResBlock(nn.Module):
    """x + CBAM(conv-BN-ReLU-conv-BN(x))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch),
        )  # fmt: skip
        self.attn = CBAM(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.attn(self.body(x)))


class AttentionGenerator(nn.Module):
    """(N, in_ch, H, W) -> (N, out_ch, H, W); H, W multiples of 2**depth."""

    def __init__(
        self, in_ch: int, out_ch: int, ngf: int = 64, depth: int = 3, n_blocks: int = 6
    ) -> None:
        super().__init__()
        self.depth, self.stride = depth, 2**depth
        chs = [ngf * min(2**i, 8) for i in range(depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, chs[0], 7, padding=3, bias=False),
            nn.BatchNorm2d(chs[0]),
            nn.ReLU(True),
        )
        self.downs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chs[i], chs[i + 1], 3, 2, 1, bias=False),
                nn.BatchNorm2d(chs[i + 1]),
                nn.ReLU(True),
                AttentionResBlock(chs[i + 1]),
            )
            for i in range(depth)
        )
        self.middle = nn.Sequential(*[AttentionResBlock(chs[-1]) for _ in range(n_blocks)])
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(chs[i + 1] * (1 if i == depth - 1 else 2), chs[i], 4, 2, 1,
                                   bias=False),
                nn.BatchNorm2d(chs[i]),
                nn.ReLU(True),
            )
            for i in reversed(range(depth))
        )  # fmt: skip
        self.out = nn.Conv2d(2 * chs[0], out_ch, 3, padding=1)

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0
    ) -> AttentionGenerator:
        return cls(in_ch, out_ch, spec.ngf, spec.depth, spec.n_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "AttentionGenerator")
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = self.middle(skips[-1])
        for k, up in enumerate(self.ups):
            h = torch.cat([up(h), skips[self.depth - 1 - k]], dim=1)
        return self.out(h)
