"""U-Net and PatchGAN shapes, sizes, receptive field; the registry and the losses."""

from __future__ import annotations

import pytest
import torch

from sar2opt.config import ModelSpec
from sar2opt.errors import ConfigError
from sar2opt.models import (
    DISCRIMINATORS,
    GENERATORS,
    PatchGANDiscriminator,
    UNetGenerator,
    build_discriminator,
    build_generator,
)
from sar2opt.models.losses import gan_loss, l1_loss, weighted_mse_mae
from sar2opt.models.patchgan import receptive_field


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", [64, 128, 256])
def test_unet_output_shape(size: int) -> None:
    g = UNetGenerator(2, 4, ngf=16, depth=5).eval()
    with torch.no_grad():
        y = g(torch.randn(1, 2, size, size))
    assert y.shape == (1, 4, size, size)


def test_unet_non_square_and_bad_size() -> None:
    g = UNetGenerator(2, 4, ngf=8, depth=3).eval()
    assert g(torch.randn(1, 2, 32, 64)).shape == (1, 4, 32, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        g(torch.randn(1, 2, 36, 32))


def test_unet_parameter_count() -> None:
    # Demo default (2 SAR -> 4 optical, ngf 16, depth 5): about 1.04 M parameters.
    assert n_params(UNetGenerator(2, 4, ngf=16, depth=5)) == 1_044_020
    assert n_params(UNetGenerator(2, 4, ngf=16, depth=5, dropout=0.5)) == 1_044_020


def test_unet_output_is_linear() -> None:
    g = UNetGenerator(1, 1, ngf=8, depth=2)
    with torch.no_grad():
        for p in g.ups[-1][1].parameters():
            p.zero_()
        g.ups[-1][1].bias.fill_(-5.0)  # a tanh/sigmoid head could not output -5
    assert torch.allclose(g.eval()(torch.randn(1, 1, 8, 8)), torch.tensor(-5.0))


@pytest.mark.parametrize(("size", "out"), [(64, 6), (128, 14), (256, 30)])
def test_patchgan_output_map(size: int, out: int) -> None:
    d = PatchGANDiscriminator(6, ndf=16, n_layers=3)
    y = d(torch.randn(2, 2, size, size), torch.randn(2, 4, size, size))
    assert y.shape == (2, 1, out, out)
    assert n_params(d) == 176_081


def test_patchgan_receptive_field_is_70() -> None:
    assert receptive_field(3) == 70
    torch.manual_seed(0)
    d = PatchGANDiscriminator(2, ndf=4).eval()
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    y = d(x, torch.zeros(1, 1, 128, 128))
    y[0, 0, 7, 7].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    # Logit (7, 7) sees input rows/cols 7*8-23 .. 7*8-23+69: exactly 70 px.
    assert (rows.min().item(), rows.max().item()) == (33, 102)
    assert (cols.min().item(), cols.max().item()) == (33, 102)


def test_registry_builds_and_rejects_unknown_names() -> None:
    spec = ModelSpec(ngf=8, ndf=8, depth=3)
    g = build_generator(spec, 2, 4)
    d = build_discriminator(spec, 6)
    assert isinstance(g, GENERATORS["unet"]) and g.depth == 3
    assert isinstance(d, DISCRIMINATORS["patchgan"])
    with pytest.raises(ConfigError, match="choices: attention, pix2pixhd, .*unet"):
        build_generator(ModelSpec(generator="resnet"), 2, 4)
    with pytest.raises(ConfigError, match="choices: multiscale, none, patchgan"):
        build_discriminator(ModelSpec(discriminator="nope"), 6)
    with pytest.raises(ConfigError, match="model.refine"):
        build_generator(ModelSpec(refine="swin"), 2, 4)
    assert build_discriminator(ModelSpec(discriminator="none"), 6) is None


def test_losses() -> None:
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    target[..., 0, 0] = 11.0  # a "cloud" pixel, masked out below
    mask = torch.ones(1, 1, 2, 2)
    mask[..., 0, 0] = 0
    assert l1_loss(pred, target, mask).item() == pytest.approx(1.0)
    assert l1_loss(pred, target).item() == pytest.approx((3 + 11) / 4)
    assert weighted_mse_mae(pred, 2 * torch.ones_like(pred), 0.5, 2.0).item() == pytest.approx(6.0)
    big = torch.full((1, 1, 3, 3), 20.0)
    assert gan_loss(big, True).item() == pytest.approx(0.0, abs=1e-6)
    assert gan_loss(-big, False).item() == pytest.approx(0.0, abs=1e-6)
    assert gan_loss(torch.zeros(4), True).item() == pytest.approx(0.6931, abs=1e-4)
