"""Input sets: which batch keys a model reads, and how they become one input tensor.

S (SAR), SD (SAR + DEM), SO (SAR + prior cloud-free optical), SOD (all three). Every
generator takes one tensor: the keys concatenated along channels in the fixed order
sar, prior, dem. The DEM goes last so that a model fusing it apart (SARDINet late or
intermediate fusion) finds it as the trailing ``dem_ch`` channels.

Each key is standardised with the checkpoint's ``norm`` by ``normalise_input``, in training
(``sar2opt.data.stream``) and in inference (``sar2opt.infer.predictor``) alike: SAR with the
SAR statistics, the prior with the *optical* ones (it is optical reflectance, and the model
compares it with what it predicts), the DEM with its own.

The prior and the DEM are made by the cube's rules (``sar2opt.cube.build``: ``prior_optical``
under the ``cube_spec`` the checkpoint keeps, ``read_dem``), in the cube build and in the
inference reader alike. Where a pixel lacks one at inference: no clear S2 within
``prior_days`` gives the prior's band means (0 once standardised) and ``source`` says
"synthesis" (SAR only) instead of "synthesis with prior"; a DEM gap, like a SAR gap, makes
the pixel no data. Training never sees either (its patch index drops patches with a missing
input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sar2opt.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Batch keys read by each input set, in channel order.
INPUT_SETS: dict[str, tuple[str, ...]] = {
    "S": ("sar",),
    "SD": ("sar", "dem"),
    "SO": ("sar", "prior"),
    "SOD": ("sar", "prior", "dem"),
}
DEM_CH = 1  # one elevation band (metres)
#: The ``norm`` statistics (``<name>_mean``, ``<name>_std``) that standardise each input key.
NORM_OF: dict[str, str] = {"sar": "sar", "prior": "opt", "dem": "dem"}


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


def norm_keys(input_set: str) -> list[str]:
    """The ``norm`` entries a checkpoint of ``input_set`` needs (inputs and the optical output)."""
    names = dict.fromkeys([*(NORM_OF[k] for k in input_keys(input_set)), "opt"])
    return [f"{n}_{s}" for n in names for s in ("mean", "std")]


def _stat(norm: Mapping[str, Sequence[float]], name: str, n: int) -> np.ndarray:
    v = np.asarray(norm[name], dtype=np.float32).reshape(-1)
    if v.size != n:
        raise ValueError(f"{name} has {v.size} values for {n} bands")
    return v.reshape(n, 1, 1)


def normalise_input(key: str, x: np.ndarray, norm: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Input ``key`` (..., C, H, W) in physical units -> the model's units, float32 arithmetic:
    (x - mean) / std with the statistics ``NORM_OF[key]``. NaN stays NaN."""
    x = np.asarray(x, dtype=np.float32)
    name, c = NORM_OF[key], x.shape[-3]
    return (x - _stat(norm, f"{name}_mean", c)) / _stat(norm, f"{name}_std", c)


def model_input(batch: Mapping[str, torch.Tensor | np.ndarray], input_set: str) -> torch.Tensor:
    """The generator's input: the input set's keys concatenated on the channel axis."""
    import torch

    parts = []
    for k in input_keys(input_set):
        if k not in batch:
            raise KeyError(f"input set {input_set} needs batch key {k!r}; batch has {list(batch)}")
        v = batch[k]
        parts.append(v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)
