"""Input sets: which batch keys a model reads, and how they become one input tensor.

S (SAR), SD (SAR + DEM), SO (SAR + prior cloud-free optical), SOD (all three). Every
generator takes one tensor: the keys concatenated along channels in the fixed order
sar, prior, dem. The DEM goes last so that a model fusing it apart (SARDINet late or
intermediate fusion) finds it as the trailing ``dem_ch`` channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from sar2opt.errors import ConfigError

#: Batch keys read by each input set, in channel order.
INPUT_SETS: dict[str, tuple[str, ...]] = {
    "S": ("sar",),
    "SD": ("sar", "dem"),
    "SO": ("sar", "prior"),
    "SOD": ("sar", "prior", "dem"),
}
DEM_CH = 1  # one elevation band (metres)


def input_keys(input_set: str) -> tuple[str, ...]:
    """Batch keys the model reads for ``input_set``; ConfigError when it is unknown."""
    if input_set not in INPUT_SETS:
        raise ConfigError(
            f"unknown model.input_set {input_set!r}; choices: {', '.join(INPUT_SETS)}"
        )
    return INPUT_SETS[input_set]


def uses_dem(input_set: str) -> bool:
    return "dem" in input_keys(input_set)


def uses_prior(input_set: str) -> bool:
    return "prior" in input_keys(input_set)


def input_channels(input_set: str, n_sar: int, n_opt: int) -> tuple[int, int]:
    """(total input channels, trailing DEM channels): the prior has one band per output band."""
    keys = input_keys(input_set)
    n = n_sar + (n_opt if "prior" in keys else 0) + (DEM_CH if "dem" in keys else 0)
    return n, DEM_CH if "dem" in keys else 0


def model_input(batch: Mapping[str, torch.Tensor | np.ndarray], input_set: str) -> torch.Tensor:
    """The generator's input: the input set's keys concatenated on the channel axis."""
    parts = []
    for k in input_keys(input_set):
        if k not in batch:
            raise KeyError(f"input set {input_set} needs batch key {k!r}; batch has {list(batch)}")
        v = batch[k]
        parts.append(v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)
