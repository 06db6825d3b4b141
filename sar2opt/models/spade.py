"""SPADE (Park et al. 2019): normalisation modulated, pixel by pixel, by the input itself.

Each ``SPADE`` layer normalises activations without learned affine parameters, then scales
and shifts them with gamma(x), beta(x) predicted by a small conv net from the SAR (and DEM,
prior) input resized to the layer's resolution. Plain conv stacks wash the input's layout
out through normalisation; SPADE re-injects it at every scale.

The generator follows SPADE's encoder-free variant: it starts from the input down-sampled
2**depth times, then ``depth`` up-sampling SPADE residual blocks, widths ngf * 16 ... ngf
as in the paper (ngf 64, depth 5 at 256 px; multi-scale D, hinge loss, feature matching).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.models.common import check_size


class SPADE(nn.Module):
    """norm(h) * (1 + gamma(cond)) + beta(cond), cond resized to h (nearest)."""

    def __init__(self, ch: int, cond_ch: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(ch, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_ch, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, ch, 3, padding=1)
        self.beta = nn.Conv2d(hidden, ch, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a = self.shared(F.interpolate(cond, size=h.shape[-2:], mode="nearest"))
        return self.norm(h) * (1 + self.gamma(a)) + self.beta(a)


class SPADEResBlock(nn.Module):
    """Residual block whose two norms (and the learned shortcut's) are SPADE layers."""

    def __init__(self, fin: int, fout: int, cond_ch: int, hidden: int) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.norm0, self.conv0 = SPADE(fin, cond_ch, hidden), nn.Conv2d(fin, fmid, 3, padding=1)
        self.norm1, self.conv1 = SPADE(fmid, cond_ch, hidden), nn.Conv2d(fmid, fout, 3, padding=1)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_ch, hidden)
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.conv_s(self.norm_s(h, cond)) if self.learned_shortcut else h
        d = self.conv0(F.leaky_relu(self.norm0(h, cond), 0.2))
        d = self.conv1(F.leaky_relu(self.norm1(d, cond), 0.2))
        return s + d


class SPADEGenerator(nn.Module):
    """(N, in_ch, H, W) -> (N, out_ch, H, W); H, W multiples of 2**depth. Output linear."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, depth: int = 5) -> None:
        super().__init__()
        self.depth = depth
        self.stride = 2**depth
        chs = [ngf * min(2 ** (depth - i), 16) for i in range(depth + 1)]
        hidden = 2 * ngf  # paper: 128 for ngf 64
        self.fc = nn.Conv2d(in_ch, chs[0], 3, padding=1)
        self.head = SPADEResBlock(chs[0], chs[0], in_ch, hidden)
        self.ups = nn.ModuleList(
            SPADEResBlock(chs[i], chs[i + 1], in_ch, hidden) for i in range(depth)
        )
        self.out = nn.Conv2d(chs[-1], out_ch, 3, padding=1)

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> SPADEGenerator:
        return cls(in_ch, out_ch, spec.ngf, spec.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "SPADEGenerator")
        h = self.fc(F.interpolate(x, scale_factor=1 / self.stride, mode="area"))
        h = self.head(h, x)
        for block in self.ups:
            h = block(F.interpolate(h, scale_factor=2, mode="nearest"), x)
        return self.out(F.leaky_relu(h, 0.2))
