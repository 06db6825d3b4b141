"""Model registry: config names -> classes, explicit dicts (no dynamic imports).

Every generator class has ``from_spec(spec, in_ch, out_ch, dem_ch)`` and a ``stride``
(H and W must be multiples; ``forward_padded`` pads other sizes); every discriminator has
``from_spec(spec, in_ch)`` with in_ch = model input + optical channels. Add a model by
importing its class here and adding one entry. ``presets.MODELS`` names whole setups.
"""

from __future__ import annotations

from torch import nn

from sar2opt.config import ModelSpec
from sar2opt.errors import ConfigError
from sar2opt.models.attention import AttentionGenerator
from sar2opt.models.common import forward_padded, n_params
from sar2opt.models.patchgan import PatchGANDiscriminator
from sar2opt.models.pix2pixhd import LocalEnhancer, MultiscaleDiscriminator
from sar2opt.models.reference import ReferenceGenerator
from sar2opt.models.restormer import RefinedGenerator, Restormer
from sar2opt.models.sardinet import SARDINet
from sar2opt.models.spade import SPADEGenerator
from sar2opt.models.unet import UNetGenerator

GENERATORS: dict[str, type[nn.Module]] = {
    "unet": UNetGenerator,
    "pix2pixhd": LocalEnhancer,
    "spade": SPADEGenerator,
    "sardinet": SARDINet,
    "attention": AttentionGenerator,
    "restormer": Restormer,
}
DISCRIMINATORS: dict[str, type[nn.Module] | None] = {
    "patchgan": PatchGANDiscriminator,
    "multiscale": MultiscaleDiscriminator,
    "none": None,  # non-adversarial: reconstruction loss only
}
REFINERS: dict[str, type[nn.Module] | None] = {"none": None, "restormer": Restormer}


def _lookup(registry: dict, name: str, what: str) -> type[nn.Module] | None:
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choices: {', '.join(sorted(registry))}")
    return registry[name]


def build_generator(spec: ModelSpec, in_ch: int, out_ch: int, dem_ch: int = 0) -> nn.Module:
    """The generator named by ``spec.generator`` (then ``spec.refine``) for in_ch -> out_ch.

    in_ch counts every input channel of the input set (SAR, prior, DEM); the DEM is the
    trailing ``dem_ch`` of them. With ``spec.reference`` other than none, the whole is
    wrapped to predict a residual over that reference (``models.reference``).
    """
    cls = _lookup(GENERATORS, spec.generator, "model.generator")
    # a net under a reference also sees the reference it corrects, ahead of its input
    net_in = in_ch + (out_ch if spec.reference != "none" else 0)
    gen = cls.from_spec(spec, net_in, out_ch, dem_ch)
    refiner = _lookup(REFINERS, spec.refine, "model.refine")
    if refiner is not None:
        gen = RefinedGenerator(gen, refiner.from_spec(spec, net_in + out_ch, out_ch))
    if spec.reference != "none":
        gen = ReferenceGenerator(gen, spec.reference, spec.input_set, in_ch, out_ch)
    return gen


def build_discriminator(spec: ModelSpec, in_ch: int) -> nn.Module | None:
    """The discriminator named by ``spec.discriminator``, or None for ``none``."""
    cls = _lookup(DISCRIMINATORS, spec.discriminator, "model.discriminator")
    return None if cls is None else cls.from_spec(spec, in_ch)


__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "REFINERS",
    "AttentionGenerator",
    "LocalEnhancer",
    "MultiscaleDiscriminator",
    "PatchGANDiscriminator",
    "ReferenceGenerator",
    "RefinedGenerator",
    "Restormer",
    "SARDINet",
    "SPADEGenerator",
    "UNetGenerator",
    "build_discriminator",
    "build_generator",
    "forward_padded",
    "n_params",
]
