"""The model families: shapes at several sizes, padding, and the pieces each paper defines."""

from __future__ import annotations

import pytest
import torch

from sar2opt.config import ModelSpec
from sar2opt.models import (
    AttentionGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    RefinedGenerator,
    Restormer,
    SARDINet,
    SPADEGenerator,
    build_generator,
    forward_padded,
    n_params,
)
from sar2opt.models.attention import CBAM
from sar2opt.models.common import pad_amounts
from sar2opt.models.presets import MODELS, preset_specs
from sar2opt.models.restormer import MDTA
from sar2opt.models.sardinet import BalancedSeparableConv
from sar2opt.models.spade import SPADE

SMALL = {"ngf": 8, "ndf": 8, "depth": 3, "n_blocks": 2}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("size", [(48, 64)])
def test_every_model_keeps_size_and_bands(name: str, size: tuple[int, int]) -> None:
    spec, _ = preset_specs(name, **SMALL)
    gen = build_generator(spec, 3, 5, dem_ch=1).eval()
    with torch.no_grad():
        y = gen(torch.randn(1, 3, *size))
    assert y.shape == (1, 5, *size) and y.dtype == torch.float32


@pytest.mark.parametrize("name", ["pix2pixhd", "spade", "sardinet_late", "attention"])
def test_other_sizes_need_the_stride_or_padding(name: str) -> None:
    spec, _ = preset_specs(name, **SMALL)
    gen = build_generator(spec, 2, 3, dem_ch=0).eval()
    assert gen.stride == 8
    with pytest.raises(ValueError, match="multiples of 8"):
        gen(torch.randn(1, 2, 36, 40))
    x = torch.randn(1, 2, 37, 50)
    with torch.no_grad():
        y = forward_padded(gen, x)
        # The padded rows are reflections: the valid crop equals running on the padded input.
        xp = torch.nn.functional.pad(x, (0, 6, 0, 3), mode="reflect")
        assert torch.allclose(y, gen(xp)[..., :37, :50])
    assert y.shape == (1, 3, 37, 50)
    assert pad_amounts(37, 50, 8) == (3, 6) and pad_amounts(32, 64, 8) == (0, 0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_paper_sizes_at_256() -> None:
    # pix2pix U-Net, 8 levels of ngf 64 at 256 px: the bottleneck is 1 x 1; 54.4 M parameters.
    spec, _ = preset_specs("pix2pix")
    gen = build_generator(spec, 2, 3)
    assert gen.stride == 256 and abs(n_params(gen) - 54.4e6) < 0.1e6
    # pix2pixHD: G1 (ngf 64, 4 downs) inside G2 (ngf 32): stride 32.
    g = LocalEnhancer(2, 3, ngf=32, n_down_global=4, n_blocks_global=9)
    assert g.stride == 32 and g.global_g.stride == 16


def test_multiscale_discriminator_scales_and_features() -> None:
    d = MultiscaleDiscriminator(5, ndf=8, n_scales=3)
    outs = d(torch.randn(2, 2, 64, 64), torch.randn(2, 3, 64, 64))
    assert len(outs) == 3 and all(len(o) == 5 for o in outs)  # 4 feature maps + logits
    # Each scale sees the pair at half the previous resolution.
    assert [o[0].shape[-1] for o in outs] == [33, 17, 9]
    assert all(o[-1].shape[1] == 1 for o in outs)


def test_spade_modulation_follows_the_input() -> None:
    torch.manual_seed(0)
    layer = SPADE(4, cond_ch=2, hidden=8)
    h = torch.randn(2, 4, 8, 8)
    cond = torch.zeros(2, 2, 16, 16)
    with torch.no_grad():
        torch.nn.init.zeros_(layer.gamma.weight)
        torch.nn.init.zeros_(layer.gamma.bias)
        torch.nn.init.zeros_(layer.beta.weight)
        layer.beta.bias.fill_(3.0)
    out = layer(h, cond).detach()
    # gamma = 0, beta = 3: normalised activations (mean 0 over batch and pixels) shifted by 3.
    assert out.mean(dim=(0, 2, 3)) == pytest.approx([3.0] * 4, abs=1e-5)
    g = SPADEGenerator(2, 3, ngf=4, depth=2).eval()
    x = torch.randn(1, 2, 16, 16)
    x2 = x.clone()
    x2[..., :4, :4] += 5  # a bright corner in the SAR changes the output locally most
    with torch.no_grad():
        d = (g(x2) - g(x)).abs().mean(1)[0]
    assert d[:4, :4].mean() > 3 * d[8:, 8:].mean()


def test_balanced_separable_conv_shares_pointwise_kernels() -> None:
    torch.manual_seed(0)
    bsc = BalancedSeparableConv(in_ch=4, k_s=3, k_c=5).eval()
    x = torch.randn(2, 4, 8, 8)
    y = bsc(x)
    assert y.shape == (2, 15, 8, 8)
    # Parameters: depth-wise 4*3*(9+1), point-wise (shared!) 4*5+5, BN 2*15.
    assert n_params(bsc) == 4 * 3 * 10 + 25 + 30
    # Slot s of the output = the shared point-wise mix of the s-th depth-wise map of each channel.
    with torch.no_grad():
        dw = bsc.dw(x).view(2, 4, 3, 8, 8)  # (N, channel, slot, H, W)
        mixed = bsc.pw(dw[:, :, 1])  # slot 1 through the shared point-wise kernels
        bn = bsc.post[0]
        sl = slice(5, 10)
        want = (mixed - bn.running_mean[sl, None, None]) / torch.sqrt(
            bn.running_var[sl, None, None] + bn.eps
        ) * bn.weight[sl, None, None] + bn.bias[sl, None, None]
        assert torch.allclose(y[:, sl], torch.relu(want), atol=1e-5)


@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_sardinet_dem_fusion(fusion: str) -> None:
    torch.manual_seed(0)
    g = SARDINet(3, 4, ngf=8, depth=2, dem_ch=1, fusion=fusion).eval()
    assert len(g.decoders) == 4  # one branch per output band
    x = torch.randn(1, 3, 16, 16)
    x2 = x.clone()
    x2[:, 2] += 1.0  # change the DEM only
    with torch.no_grad():
        assert not torch.allclose(g(x), g(x2))
        # One band's branch does not depend on another band's weights.
        before = g(x)[:, 1:]
        for p in g.decoders[0].parameters():
            p.add_(1.0)
        assert torch.equal(g(x)[:, 1:], before)
    layers = {"early": g.condition[0].in_channels, "late": g.decoders[0].head[0].in_channels}
    if fusion == "early":
        assert layers["early"] == 3
    elif fusion == "late":
        assert layers["early"] == 2 and layers["late"] == 8 + 1
    else:
        assert g.bottleneck.dw.in_channels == 3 * 8 + 8


def test_sardinet_without_dem_falls_back_to_early() -> None:
    g = SARDINet(2, 3, ngf=8, depth=2, dem_ch=0, fusion="late")
    assert g.fusion == "early" and g.condition[0].in_channels == 2


def test_cbam_gates_are_between_zero_and_one() -> None:
    torch.manual_seed(0)
    att = CBAM(8)
    x = torch.rand(2, 8, 8, 8) + 0.1
    y = att(x)
    assert (y >= 0).all() and (y <= x).all() and (y < x).any()
    g = AttentionGenerator(2, 3, ngf=8, depth=2, n_blocks=1)
    assert sum(isinstance(m, CBAM) for m in g.modules()) == 2 + 1


def test_mdta_attends_over_channels_not_pixels() -> None:
    torch.manual_seed(0)
    m = MDTA(dim=8, heads=2)
    # The attention map is (C/h x C/h) per head, so a 4x larger image costs only ~4x.
    for size in (8, 16):
        assert m(torch.randn(1, 8, size, size)).shape == (1, 8, size, size)
    r = Restormer(3, 2, dim=8, n_blocks=1)
    assert r.stride == 2 and r(torch.randn(1, 3, 12, 12)).shape == (1, 2, 12, 12)


def test_refined_generator_is_base_plus_residual() -> None:
    spec = ModelSpec(ngf=8, depth=3, refine="restormer", n_blocks=3)
    g = build_generator(spec, 2, 3).eval()
    assert isinstance(g, RefinedGenerator) and g.stride == 8
    with torch.no_grad():
        for p in g.refiner.out.parameters():
            p.zero_()
        x = torch.randn(1, 2, 16, 16)
        assert torch.allclose(g(x), g.base(x))  # a zero refiner leaves stage one untouched
