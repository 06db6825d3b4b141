"""Model registry: config names -> classes, explicit dicts (no dynamic imports).

Add a model by importing its class here and adding one entry; every generator takes
``(in_ch, out_ch, ngf=, depth=)`` and every discriminator ``(in_ch, ndf=)``.
"""

from __future__ import annotations

from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.errors import ConfigError
from sar2opt.models.patchgan import PatchGANDiscriminator
from sar2opt.models.unet import UNetGenerator

GENERATORS: dict[str, type[nn.Module]] = {"unet": UNetGenerator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"patchgan": PatchGANDiscriminator}


def _lookup(registry: dict[str, type[nn.Module]], name: str, what: str) -> type[nn.Module]:
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choices: {', '.join(sorted(registry))}")
    return registry[name]


def build_generator(spec: ModelSpec, in_ch: int, out_ch: int) -> nn.Module:
    """The generator named by ``spec.generator`` mapping in_ch SAR bands to out_ch optical."""
    cls = _lookup(GENERATORS, spec.generator, "model.generator")
    return cls(in_ch, out_ch, ngf=spec.ngf, depth=spec.depth)


def build_discriminator(spec: ModelSpec, in_ch: int) -> nn.Module:
    """The discriminator named by ``spec.discriminator``; in_ch = SAR + optical bands."""
    cls = _lookup(DISCRIMINATORS, spec.discriminator, "model.discriminator")
    return cls(in_ch, ndf=spec.ndf)


__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "PatchGANDiscriminator",
    "UNetGenerator",
    "build_discriminator",
    "build_generator",
]
