"""pix2pixHD (Wang et al. 2018): coarse-to-fine generator, multi-scale discriminators.

- ``GlobalGenerator`` (G1): 7x7 conv, ``n_down`` stride-2 convs, ``n_blocks`` residual
  blocks, as many transposed convs, 7x7 conv; instance norm throughout.
- ``LocalEnhancer`` (G2 around G1): G1 runs on the input down-sampled 2x; its last feature
  map is added to G2's own full-resolution features before G2's residual blocks, so G1 fixes
  the global layout and G2 the detail. Registry name ``pix2pixhd``.
- ``MultiscaleDiscriminator``: ``n_scales`` PatchGANs on the pair at 1, 1/2, 1/4 resolution;
  it returns every layer's features so the step can add the feature-matching loss.
  ``discriminator: none`` gives the L1-only mode.

Paper defaults: G1 ngf 64, n_down 4, 9 blocks; G2 ngf 32, 3 blocks; 2-3 scales, lambda_fm 10,
LSGAN. Here ``ngf`` is G2's width (G1 gets 2 x ngf) and ``depth`` the total down-sampling
(G1's n_down = depth - 1), so stride = 2**depth as for the U-Net.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.models.common import check_size


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=False)


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection padded."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalGenerator(nn.Module):
    """G1: (N, in_ch, H, W) -> (N, out_ch, H, W); H, W multiples of 2**n_down."""

    def __init__(
        self, in_ch: int, out_ch: int, ngf: int = 64, n_down: int = 4, n_blocks: int = 9
    ) -> None:
        super().__init__()
        self.stride = 2**n_down
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _norm(ngf), nn.ReLU(True)
        ]  # fmt: skip
        for i in range(n_down):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1), _norm(2 * c), nn.ReLU(True)]
        c = ngf * 2**n_down
        layers += [ResnetBlock(c) for _ in range(n_blocks)]
        for i in range(n_down):
            c = ngf * 2 ** (n_down - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1)]
            layers += [_norm(c // 2), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)  # features (ngf ch) at input resolution
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "GlobalGenerator")
        return self.head(self.body(x))


class LocalEnhancer(nn.Module):
    """G2 + G1: full-resolution front end, G1 features at 1/2 added in, residual blocks, up."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        ngf: int = 32,
        n_down_global: int = 4,
        n_blocks_global: int = 9,
        n_blocks_local: int = 3,
    ) -> None:
        super().__init__()
        self.global_g = GlobalGenerator(in_ch, out_ch, 2 * ngf, n_down_global, n_blocks_global)
        self.global_g.head = nn.Identity()  # G2 uses G1's features, not its image
        self.stride = 2 * self.global_g.stride
        self.down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _norm(ngf), nn.ReLU(True),
            nn.Conv2d(ngf, 2 * ngf, 3, 2, 1), _norm(2 * ngf), nn.ReLU(True),
        )  # fmt: skip
        self.up = nn.Sequential(
            *[ResnetBlock(2 * ngf) for _ in range(n_blocks_local)],
            nn.ConvTranspose2d(2 * ngf, ngf, 3, 2, 1, output_padding=1), _norm(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7),
        )  # fmt: skip

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> LocalEnhancer:
        if spec.depth < 2:
            raise ValueError(f"pix2pixhd needs depth >= 2, got {spec.depth}")
        return cls(in_ch, out_ch, spec.ngf, spec.depth - 1, spec.n_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x, self.stride, "pix2pixHD LocalEnhancer")
        coarse = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return self.up(self.down(x) + self.global_g.body(coarse))


class _NLayerD(nn.Module):
    """PatchGAN (n_layers=3: 70 px receptive field) that also returns every layer's output."""

    def __init__(self, in_ch: int, ndf: int, n_layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_ch, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
        ch = ndf
        for n in range(1, n_layers + 1):
            nxt = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(
                nn.Sequential(nn.Conv2d(ch, nxt, 4, stride, 2), _norm(nxt), nn.LeakyReLU(0.2))
            )
            ch = nxt
        blocks.append(nn.Conv2d(ch, 1, 4, 1, 2))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """(inputs, opt) -> per scale, the list of layer outputs (the last one is the logits)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_scales: int = 3, n_layers: int = 3) -> None:
        super().__init__()
        self.nets = nn.ModuleList(_NLayerD(in_ch, ndf, n_layers) for _ in range(n_scales))

    @classmethod
    def from_spec(cls, spec: ModelSpec, in_ch: int) -> MultiscaleDiscriminator:
        return cls(in_ch, spec.ndf, spec.n_scales)

    def forward(self, x: torch.Tensor, opt: torch.Tensor) -> list[list[torch.Tensor]]:
        h = torch.cat([x, opt], dim=1)
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                h = F.avg_pool2d(h, 3, 2, 1, count_include_pad=False)
            outs.append(net(h))
        return outs
