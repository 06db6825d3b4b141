"""SARDINet-style generator: light, non-adversarial, with three ways to fuse a DEM.

- Input conditioning: a learned per-pixel band mix (1x1 conv + batch norm) puts SAR dB,
  prior reflectance and elevation on a common footing before any spatial filtering.
- Encoder: three parallel branches of depth-wise separable convolutions with dilation 1, 2
  and 4 (small, medium and large context at the same cost), each down-sampling ``depth``
  times; their outputs are concatenated at every level (skips for the decoder).
- Bottleneck: a ``BalancedSeparableConv``: K_S depth-wise filters per input channel, then
  K_C point-wise kernels *shared* by the K_S slots -> K_S x K_C maps. Every input channel
  (SAR feature or DEM feature) gets the same depth-wise capacity, hence "balanced".
- Decoder: one branch per output band (each band has its own up-sampling path), since
  bands differ in what they need from the SAR (vegetation vs. water vs. soil).
- Loss: MAE only (``discriminator: none``).

DEM fusion (the trailing ``dem_ch`` input channels): ``early`` feeds it with the other
inputs; ``intermediate`` encodes it in its own separable branch and fuses it at the
bottleneck through the balanced separable conv; ``late`` concatenates it to every band
branch's last features, just before the output conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sar2opt.config import DEM_FUSIONS, ModelSpec
from sar2opt.errors import ConfigError
from sar2opt.models.common import check_size


class SeparableConv(nn.Sequential):
    """Depth-wise k x k (optionally strided/dilated) -> point-wise 1x1 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, dilation, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class BalancedSeparableConv(nn.Module):
    """(N, C, H, W) -> (N, K_S * K_C, H, W): K_S depth-wise maps per channel, shared K_C mix."""

    def __init__(self, in_ch: int, k_s: int, k_c: int, kernel: int = 3) -> None:
        super().__init__()
        self.k_s, self.k_c = k_s, k_c
        self.dw = nn.Conv2d(in_ch, in_ch * k_s, kernel, padding=kernel // 2, groups=in_ch)
        self.pw = nn.Conv2d(in_ch, k_c, 1)  # the same K_C kernels for every one of the K_S slots
        self.post = nn.Sequential(nn.BatchNorm2d(k_s * k_c), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = self.dw(x).reshape(n, c, self.k_s, h, w)  # grouped conv: channel-major outputs
        d = d.transpose(1, 2).reshape(n * self.k_s, c, h, w)
        return self.post(self.pw(d).reshape(n, self.k_s * self.k_c, h, w))


def _branch(ch: int, depth: int, dilation: int) -> nn.ModuleList:
    """One encoder branch: per level, a dilated separable conv then a strided one."""
    return nn.ModuleList(
        nn.Sequential(SeparableConv(ch, ch, dilation=dilation), SeparableConv(ch, ch, stride=2))
        for _ in range(depth)
    )


class BandDecoder(nn.Module):
    """Up-sampling path for one output band, with the encoder skips of every level."""

    def __init__(self, ngf: int, depth: int, late_ch: int) -> None:
        super().__init__()
        chans = []
        for k in range(depth):  # k-th up-sampling: to 1/2**s, joined by the skip from there
            s = depth - 1 - k
            chans.append((3 * ngf if k == 0 else ngf) + (3 * ngf if s > 0 else ngf))
        self.levels = nn.ModuleList(SeparableConv(c, ngf) for c in chans)
        self.head = nn.Sequential(
            nn.Conv2d(ngf + late_ch, ngf, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ngf, 1, 1)
        )

    def forward(
        self, h: torch.Tensor, skips: list[torch.Tensor], late: torch.Tensor | None
    ) -> torch.Tensor:
        for k, level in enumerate(self.levels):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = level(torch.cat([h, skips[len(skips) - 2 - k]], dim=1))
        if late is not None:
            h = torch.cat([h, late], dim=1)
        return self.head(h)


class SARDINet(nn.Module):
    """(N, in_ch, H, W) -> (N, out_ch, H, W); the last ``dem_ch`` input channels are the DEM."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        ngf: int = 32,
        depth: int = 4,
        dem_ch: int = 0,
        fusion: str = "early",
    ) -> None:
        super().__init__()
        if fusion not in DEM_FUSIONS:
            raise ConfigError(
                f"unknown model.dem_fusion {fusion!r}; choices: {', '.join(DEM_FUSIONS)}"
            )
        self.fusion = fusion if dem_ch else "early"  # no DEM: nothing to fuse apart
        self.dem_ch = dem_ch if self.fusion != "early" else 0
        self.depth, self.stride = depth, 2**depth
        self.condition = nn.Sequential(
            nn.Conv2d(in_ch - self.dem_ch, ngf, 1), nn.BatchNorm2d(ngf), nn.ReLU(inplace=True)
        )
        self.branches = nn.ModuleList(_branch(ngf, depth, d) for d in (1, 2, 4))
        bottleneck_in = 3 * ngf
        if self.fusion == "intermediate":
            self.dem_cond = nn.Sequential(
                nn.Conv2d(dem_ch, ngf, 1), nn.BatchNorm2d(ngf), nn.ReLU(inplace=True)
            )
            self.dem_branch = _branch(ngf, depth, 1)
            bottleneck_in += ngf
        self.bottleneck = BalancedSeparableConv(bottleneck_in, k_s=3, k_c=ngf)
        late_ch = dem_ch if self.fusion == "late" else 0
        self.decoders = nn.ModuleList(BandDecoder(ngf, depth, late_ch) for _ in range(out_ch))

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> SARDINet:
        return cls(in_ch, out_ch, spec.ngf, spec.depth, dem_ch, spec.dem_fusion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "SARDINet")
        dem = x[:, x.shape[1] - self.dem_ch :] if self.dem_ch else None
        main = x[:, : x.shape[1] - self.dem_ch]
        h0 = self.condition(main)
        skips = [h0]  # skips[l]: features at 1/2**l
        hs = [h0, h0, h0]
        for lvl in range(self.depth):
            hs = [br[lvl](h) for br, h in zip(self.branches, hs, strict=True)]
            skips.append(torch.cat(hs, dim=1))
        b = skips[-1]
        if self.fusion == "intermediate":
            hd = self.dem_cond(dem)
            for level in self.dem_branch:
                hd = level(hd)
            b = torch.cat([b, hd], dim=1)
        b = self.bottleneck(b)
        late = dem if self.fusion == "late" else None
        return torch.cat([dec(b, skips, late) for dec in self.decoders], dim=1)
