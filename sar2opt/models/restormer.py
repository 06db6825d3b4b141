"""Restormer-style transformer restoration (Zamir et al. 2022), and the refinement wrapper.

Restormer's attention runs across channels, not pixels (MDTA: the C x C attention map of
"transposed" self-attention), so its cost grows linearly with image size and a 256 px tile
is cheap; its feed-forward is gated with depth-wise convs (GDFN). Used two ways:

- ``Restormer``: a generator on its own (registry name ``restormer``);
- ``RefinedGenerator``: a second stage after any generator (``model.refine: restormer``):
  it sees the input and the first stage's output and adds a residual correction, so the
  first stage keeps the colours and the refiner restores texture (two-stage inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.models.common import check_size


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every pixel (Restormer's WithBias_LayerNorm)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[
            :, None, None
        ]


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: per head, a (C/h x C/h) map over channels."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: GELU(dw(W1 x)) * dw(W2 x), projected back."""

    def __init__(self, dim: int, expansion: float = 2.66) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.proj_in = nn.Conv2d(dim, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.proj_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dw(self.proj_in(x)).chunk(2, dim=1)
        return self.proj_out(F.gelu(a) * g)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), MDTA(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim), GDFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _blocks(dim: int, heads: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads) for _ in range(n)])


class Restormer(nn.Module):
    """Two-level Restormer: blocks at full resolution, pixel-unshuffle to 1/2, back up.

    The paper's four levels (dim 48, blocks 4/6/6/8) are heavier than a SAR tile needs;
    ``dim`` and ``n_blocks`` per level scale it. Output is linear (standardised units).
    """

    stride = 2

    def __init__(self, in_ch: int, out_ch: int, dim: int = 48, n_blocks: int = 2) -> None:
        super().__init__()
        n = max(1, n_blocks)
        self.embed = nn.Conv2d(in_ch, dim, 3, padding=1)
        self.enc1 = _blocks(dim, 1, n)
        self.down = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1), nn.PixelUnshuffle(2))
        lat = 4 * (dim // 2)  # pixel-unshuffle: 4x the channels at half the resolution
        self.latent = _blocks(lat, 2, n)
        self.up = nn.Sequential(nn.Conv2d(lat, 4 * dim, 3, padding=1), nn.PixelShuffle(2))
        self.reduce = nn.Conv2d(2 * dim, dim, 1)
        self.dec1 = _blocks(dim, 1, n)
        self.out = nn.Conv2d(dim, out_ch, 3, padding=1)

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> Restormer:
        return cls(in_ch, out_ch, dim=spec.ngf, n_blocks=max(1, spec.n_blocks // 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "Restormer")
        e1 = self.enc1(self.embed(x))
        lat = self.latent(self.down(e1))
        d1 = self.dec1(self.reduce(torch.cat([self.up(lat), e1], dim=1)))
        return self.out(d1)


class RefinedGenerator(nn.Module):
    """Two stages: y0 = base(x), then y = y0 + refiner([x, y0]). Trained end to end."""

    def __init__(self, base: nn.Module, refiner: nn.Module) -> None:
        super().__init__()
        self.base, self.refiner = base, refiner
        self.stride = math.lcm(int(base.stride), int(refiner.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.base(x)
        return y0 + self.refiner(torch.cat([x, y0], dim=1))
