"""The registered models: each family's config as its paper sets it, by one name.

A preset is a pair of ``model`` and ``train`` overrides (the YAML sections of the same
name). ``preset_specs`` returns the specs; tests and the benchmark iterate over ``MODELS``.
To use one in a job: copy its keys into the config, e.g. for SARDINet with late DEM fusion
``--set model.generator=sardinet --set model.discriminator=none --set model.dem_fusion=late``.
"""

from __future__ import annotations

import dataclasses

from sar2opt.config import ModelSpec, TrainSpec
from sar2opt.errors import ConfigError

MODELS: dict[str, dict[str, dict]] = {
    # Isola et al. 2017: U-Net 8 levels at 256 px, 70x70 PatchGAN, cGAN + 100 * L1.
    "pix2pix": {
        "model": {"generator": "unet", "discriminator": "patchgan", "ngf": 64, "ndf": 64,
                  "depth": 8, "dropout": 0.5},
        "train": {"lambda_l1": 100.0, "gan_mode": "vanilla"},
    },
    # The weighted MSE + MAE reconstruction, D updated every other step.
    "pix2pix_mse_mae": {
        "model": {"generator": "unet", "discriminator": "patchgan", "ngf": 64, "ndf": 64,
                  "depth": 8, "dropout": 0.5},
        "train": {"loss": "mse_mae", "w_mse": 1.0, "w_mae": 1.0, "d_every": 2},
    },
    # Wang et al. 2018: local enhancer around the global generator, 2 D scales, FM, LSGAN.
    "pix2pixhd": {
        "model": {"generator": "pix2pixhd", "discriminator": "multiscale", "ngf": 32,
                  "ndf": 64, "depth": 5, "n_blocks": 9, "n_scales": 2},
        "train": {"gan_mode": "lsgan", "lambda_fm": 10.0, "lambda_l1": 10.0},
    },
    "pix2pixhd_l1": {
        "model": {"generator": "pix2pixhd", "discriminator": "none", "ngf": 32, "depth": 5,
                  "n_blocks": 9},
        "train": {"loss": "l1"},
    },
    # Park et al. 2019: SPADE generator, multi-scale D, hinge loss, feature matching.
    "spade": {
        "model": {"generator": "spade", "discriminator": "multiscale", "ngf": 64, "ndf": 64,
                  "depth": 5, "n_scales": 2},
        "train": {"gan_mode": "hinge", "lambda_fm": 10.0, "lambda_l1": 10.0},
    },
    # SARDINet-style, non-adversarial, MAE; the three DEM fusions.
    "sardinet_early": {
        "model": {"generator": "sardinet", "discriminator": "none", "ngf": 32, "depth": 4,
                  "dem_fusion": "early"},
        "train": {"loss": "l1"},
    },
    "sardinet_intermediate": {
        "model": {"generator": "sardinet", "discriminator": "none", "ngf": 32, "depth": 4,
                  "dem_fusion": "intermediate"},
        "train": {"loss": "l1"},
    },
    "sardinet_late": {
        "model": {"generator": "sardinet", "discriminator": "none", "ngf": 32, "depth": 4,
                  "dem_fusion": "late"},
        "train": {"loss": "l1"},
    },
    # Attention cGAN: CBAM residual encoder, PatchGAN, cGAN + 100 * L1.
    "attention": {
        "model": {"generator": "attention", "discriminator": "patchgan", "ngf": 64, "ndf": 64,
                  "depth": 3, "n_blocks": 6},
        "train": {"lambda_l1": 100.0},
    },
    # Restormer on its own, and as the second stage after pix2pix's U-Net.
    "restormer": {
        "model": {"generator": "restormer", "discriminator": "none", "ngf": 48, "n_blocks": 6},
        "train": {"loss": "l1"},
    },
    "pix2pix_restormer": {
        "model": {"generator": "unet", "discriminator": "patchgan", "ngf": 64, "ndf": 64,
                  "depth": 8, "refine": "restormer", "n_blocks": 6},
        "train": {"lambda_l1": 100.0},
    },
}  # fmt: skip


def preset_specs(name: str, **model_overrides: object) -> tuple[ModelSpec, TrainSpec]:
    """(ModelSpec, TrainSpec) of preset ``name``, with ``model_overrides`` on top."""
    if name not in MODELS:
        raise ConfigError(f"unknown model preset {name!r}; choices: {', '.join(MODELS)}")
    p = MODELS[name]
    spec = dataclasses.replace(ModelSpec(), **{**p["model"], **model_overrides})
    return spec, dataclasses.replace(TrainSpec(), **p["train"])
