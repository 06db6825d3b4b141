"""Input sets: which batch keys a model reads, and how they become one input tensor.

S (SAR), SD (SAR + DEM), SO (SAR + prior cloud-free optical), SOD (all three), and the
cloud-removal sets SC (SAR + the same-date cloudy S2 with its cloud mask), SCO (+ prior),
SCOD (+ prior + DEM). Every generator takes one tensor: the keys concatenated along
channels in the fixed order sar, cloudy, prior, dem. The DEM goes last so that a model
fusing it apart (SARDINet late or intermediate fusion) finds it as the trailing ``dem_ch``
channels.

Each key is standardised with the checkpoint's ``norm`` by ``normalise_input``, in training
(``sar2opt.data.stream``) and in inference (``sar2opt.infer.predictor``) alike: SAR with the
SAR statistics, the prior and the cloudy S2 with the *optical* ones (they are optical
reflectance, and the model compares them with what it predicts), the DEM with its own.

``cloudy`` is Co + 1 channels: the same-date S2 reflectance (per pixel the nearest S2
observation within ±``max_dt_days``, clouds included: ``cube.align.same_date_optical``),
then its cloud mask (1 = cloud, shadow or no observation by the cube's ``clear_mask``;
0 = clear). Standardised, a masked pixel's reflectance channels are 0 (the band mean) and
its mask channel 1: the model is told which pixels are evidence and never takes a cloud
(or a made-up zero) for data.

The prior, the cloudy S2 and the DEM are made by the cube's rules (``sar2opt.cube.build``:
``prior_optical``, ``same_date_optical`` under the ``cube_spec`` the checkpoint keeps,
``read_dem``), in the cube build and in the inference reader alike. Where a pixel lacks one
at inference: no clear S2 within ``prior_days`` gives the prior's band means (0 once
standardised) and ``source`` says "synthesis" (SAR only) instead of "synthesis with prior";
no S2 that date is a masked pixel (as in training); a DEM gap, like a SAR gap, makes the
pixel no data. Training never sees a missing prior or DEM (its patch index drops patches
with one).
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
    "SC": ("sar", "cloudy"),
    "SCO": ("sar", "cloudy", "prior"),
    "SCOD": ("sar", "cloudy", "prior", "dem"),
}
DEM_CH = 1  # one elevation band (metres)
MASK_CH = 1  # the cloud mask channel after the cloudy S2's bands
#: Batch key of a reference fitted over more than the patch or window the model is given
#: (``models.reference``): training's context fit (``data.stream.ReferenceContext``),
#: inference's blend of neighbouring blocks' fits (``infer.run.fit_lattice``).
REF_KEY = "ref"
#: Batch key of the scene fit under that reference, before its residual is spread into the
#: gaps (``models.reference.scene_reference``): what its error is checked on (inference).
REF_FIT_KEY = "ref_fit"
#: Batch key of that reference's own error on the clear pixels around each pixel
#: (``models.reference.reference_error``), taken over the same context: the training job's
#: uncertainty calibration reads it (``train.calibrate``).
REF_ERR_KEY = "ref_err"
#: The ``norm`` statistics (``<name>_mean``, ``<name>_std``) that standardise each input key.
NORM_OF: dict[str, str] = {"sar": "sar", "cloudy": "opt", "prior": "opt", "dem": "dem"}


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


def uses_cloudy(input_set: str) -> bool:
    return "cloudy" in input_keys(input_set)


def input_channels(input_set: str, n_sar: int, n_opt: int) -> tuple[int, int]:
    """(total input channels, trailing DEM channels): the prior has one band per output band,
    the cloudy S2 one per output band plus its mask."""
    keys = input_keys(input_set)
    n = n_sar + (n_opt if "prior" in keys else 0) + (DEM_CH if "dem" in keys else 0)
    n += n_opt + MASK_CH if "cloudy" in keys else 0
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
    (x - mean) / std with the statistics ``NORM_OF[key]``. NaN stays NaN, except for
    ``cloudy`` (``normalise_cloudy``: no NaN comes out)."""
    x = np.asarray(x, dtype=np.float32)
    if key == "cloudy":
        return normalise_cloudy(x, norm)
    name, c = NORM_OF[key], x.shape[-3]
    return (x - _stat(norm, f"{name}_mean", c)) / _stat(norm, f"{name}_std", c)


def cloudy_masked(x: np.ndarray) -> np.ndarray:
    """(..., 1, H, W) bool: where the cloudy S2 ``x`` (..., Co + 1, H, W: reflectance, then
    the mask) is no evidence: the mask says so (> 0.5, or NaN) or a band is not finite."""
    x = np.asarray(x)
    refl, mask = x[..., :-MASK_CH, :, :], x[..., -MASK_CH:, :, :]
    return ~(mask <= 0.5) | ~np.isfinite(refl).all(axis=-3, keepdims=True)


def normalise_cloudy(x: np.ndarray, norm: Mapping[str, Sequence[float]]) -> np.ndarray:
    """The cloudy S2 (..., Co + 1, H, W) -> the model's units: the reflectance standardised
    with the optical statistics and 0 (the band mean) at masked pixels (``cloudy_masked``),
    then the mask as 1.0 / 0.0. Never NaN: a masked pixel is information, not a gap."""
    x = np.asarray(x, dtype=np.float32)
    c = x.shape[-3] - MASK_CH
    masked = cloudy_masked(x)
    z = (x[..., :c, :, :] - _stat(norm, "opt_mean", c)) / _stat(norm, "opt_std", c)
    z = np.where(masked, np.float32(0.0), z)
    return np.concatenate([z, masked.astype(np.float32)], axis=-3)


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


def model_inputs(
    batch: Mapping[str, np.ndarray], norm: Mapping[str, Sequence[float]], input_set: str
) -> tuple[np.ndarray, np.ndarray]:
    """The generator's input (B, C, H, W) float32 from the tiles of ``input_set``'s keys in
    physical units (``sar`` dB, ``cloudy`` reflectance + cloud mask, ``prior`` reflectance,
    ``dem`` metres; each (B, c, H, W)), and valid (B, H, W).

    Each key is standardised as in training (``normalise_input``) and the keys are
    concatenated in training's order (``model_input``): what inference feeds a model, and
    what a training patch's context reference is fitted on (``data.stream``). Missing values
    become 0 (the band mean): where the SAR or the DEM is missing the pixel is not valid (no
    data); where the prior is (no clear S2 within the prior window) it stays valid, the
    model gets the mean colour, and ``run.process_strip`` records that it had no prior
    (``source``); the cloudy S2 is never missing: a pixel without a clear same-date one is
    masked, and so is one without SAR or DEM: a scene fit (``models.reference``) learns from
    the clear pixels, and at a swath's edge the clear S2 beside the mean SAR taught it that
    the mean SAR has every colour, in the half of the window that has SAR.
    """
    parts, valid = {}, None
    # the cloudy S2 last: a pixel without SAR or DEM is masked in it (``model_input`` puts the
    # keys back in the input set's order)
    for k in sorted(input_keys(input_set), key=lambda k: k == "cloudy"):
        x = np.asarray(batch[k], dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"{k} must be (B, C, H, W), got shape {x.shape}")
        if k == "cloudy" and valid is not None and not valid.all():
            x = x.copy()  # the caller's array stays as it was
            x[:, -1][~valid] = 1.0  # masked: ``normalise_cloudy`` says what that is
        x = normalise_input(k, x, norm)
        finite = np.isfinite(x)
        if k in ("sar", "dem"):  # the prior may be missing (module doc of data.inputs)
            ok = finite.all(axis=1)
            valid = ok if valid is None else valid & ok
        parts[k] = x if finite.all() else np.where(finite, x, np.float32(0.0))
    x = parts["sar"] if input_set == "S" else model_input(parts, input_set).numpy()
    return x.astype(np.float32, copy=False), valid
