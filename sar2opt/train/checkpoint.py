"""Generator checkpoint: weights + plain-typed metadata, loadable with weights_only=True.

``model.pt`` = {"generator": state_dict, "meta": meta}. Meta holds only dict/list/str/
float/int/bool/None so that ``torch.load(..., weights_only=True)`` (no pickle code
execution) can read it: ``model`` (ModelSpec dict), ``in_bands``, ``out_bands``, ``norm``
({sar_mean, sar_std, opt_mean, opt_std} lists), ``config``, ``git_sha``, ``epoch``,
``metrics``, and for input sets beyond S: ``input_set``, ``aux_bands`` ({"cloudy": [...],
"prior": [...], "dem": [...]} cube bands), ``norm.dem_mean/dem_std`` (the prior and the
cloudy S2 use the opt stats) and ``cube_spec`` (the training cube's CubeSpec: inference
reads the prior and the same-date S2 by its windows and cloud test).
``config.yaml`` beside it is the same meta for humans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from sar2opt.config import Config, config_from_dict, config_to_dict
from sar2opt.data.inputs import input_channels, uses_cloudy, uses_dem, uses_prior
from sar2opt.errors import Sar2OptError, first_line
from sar2opt.models import build_generator

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
REQUIRED_META = ("model", "in_bands", "out_bands", "norm")


class CheckpointError(Sar2OptError):
    """A checkpoint directory is missing, incomplete or from an incompatible model."""


def _plain(v: object, where: str = "meta") -> object:
    """Convert tuples/numpy to plain Python; reject anything weights_only could not load."""
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[]") for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise TypeError(f"{where}: {type(v).__name__} is not a plain type")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DDP/FSDP wrapper (state-dict keys without 'module.')."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(dir: str | Path, generator: nn.Module, meta: dict) -> Path:
    """Write ``dir/model.pt`` (CPU weights + meta) and ``dir/config.yaml``; return dir."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    meta = _plain(meta)
    state = {k: v.detach().cpu() for k, v in unwrap(generator).state_dict().items()}
    torch.save({"generator": state, "meta": meta}, d / MODEL_FILE)
    (d / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    return d


#: Normalisation of an untrained checkpoint: plausible S1 dB and S2 reflectance statistics.
UNTRAINED_NORM = {
    "sar_mean": [-10.0, -16.0],
    "sar_std": [3.0, 3.0],
    "opt_mean": [0.03, 0.05, 0.04, 0.3],
    "opt_std": [0.01, 0.02, 0.02, 0.05],
}
UNTRAINED_DEM_NORM = {"dem_mean": [150.0], "dem_std": [50.0]}  # metres


def save_untrained_checkpoint(
    dir: str | Path, cfg: Config, *, git_sha: str = "untrained", seed: int = 0
) -> Path:
    """A real checkpoint of ``cfg.model`` with seeded random weights (VV/VH -> B02 B03 B04
    B08): for benchmarks and job tests, whose speed and error handling do not depend on
    training."""
    torch.manual_seed(seed)
    input_set = cfg.model.input_set
    in_ch, dem_ch = input_channels(input_set, 2, 4)
    gen = build_generator(cfg.model, in_ch, 4, dem_ch)
    out_bands = ["B02", "B03", "B04", "B08"]
    meta = {
        "model": config_to_dict(cfg.model),
        "in_bands": ["vv", "vh"],
        "out_bands": out_bands,
        "norm": UNTRAINED_NORM,
        "config": config_to_dict(cfg),
        "git_sha": git_sha,
        "epoch": 0,
        "metrics": {},
    }
    if input_set != "S":  # what a trained checkpoint of the input set carries (loop.save)
        aux = {"cloudy": [*(f"cloudy_{b}" for b in out_bands), "cloud_mask"]}
        aux = aux if uses_cloudy(input_set) else {}
        if uses_prior(input_set):
            aux["prior"] = [f"prior_{b}" for b in out_bands]
        if uses_dem(input_set):
            aux["dem"] = ["dem"]
            meta["norm"] = {**UNTRAINED_NORM, **UNTRAINED_DEM_NORM}
        meta |= {"input_set": input_set, "aux_bands": aux, "cube_spec": config_to_dict(cfg.cube)}
    return save_checkpoint(dir, gen, meta)


def _load(path: Path, device: str | torch.device = "cpu", mmap: bool = False) -> object:
    """``torch.load(path, weights_only=True)``; a file torch cannot read (junk, truncated,
    pickled code the weights-only unpickler refuses) is a CheckpointError naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch raises many types (RuntimeError, Unpickling..)
        why = f"{type(e).__name__}: {first_line(e)[:160]}"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({why})") from None


def _read(dir: str | Path, device: str = "cpu", mmap: bool = False) -> tuple[dict, dict]:
    """``model.pt`` (weights_only) and its meta, checked to hold ``REQUIRED_META``."""
    path = Path(dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = _load(path, device, mmap)
    except CheckpointError:
        if not mmap:
            raise
        ckpt = _load(path, device)  # files of the old serialisation cannot be memory-mapped
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("generator"), dict):
        raise CheckpointError(f"{path} is not a sar2opt checkpoint (no generator weights)")
    meta = ckpt.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a sar2opt checkpoint (its meta is not a mapping)")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} meta lacks {missing}")
    return ckpt, meta


def load_meta(dir: str | Path) -> dict:
    """The checkpoint's metadata, without building its generator (the weights are only
    memory-mapped, not read)."""
    return _read(dir, mmap=True)[1]


def load_generator(dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the generator through the registry, load its weights, return (model.eval(), meta)."""
    path = Path(dir) / MODEL_FILE
    ckpt, meta = _read(dir, device)
    spec = config_from_dict({"model": meta["model"]}).model
    # The input set (S by default: checkpoints older than input sets) sets the channels.
    in_ch, dem_ch = input_channels(spec.input_set, len(meta["in_bands"]), len(meta["out_bands"]))
    gen = build_generator(spec, in_ch, len(meta["out_bands"]), dem_ch)
    try:
        gen.load_state_dict(ckpt["generator"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match its model spec: {e}") from None
    return gen.to(device).eval(), meta


#: Beside model.pt in every training checkpoint: what a resumed run needs besides G's weights.
TRAIN_STATE_FILE = "train_state.pt"


def _cpu(v: object) -> object:
    """Tensors moved to the CPU inside nested dicts/lists (optimiser states live on the GPU)."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, dict):
        return {k: _cpu(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_cpu(x) for x in v]
    return v


def save_train_state(dir: str | Path, state: dict) -> Path:
    """Write ``dir/train_state.pt``: plain types and state_dicts (weights_only loadable).

    Holds ``epoch``, ``step``, ``disc`` (D's state_dict or None), ``opt_g``, ``opt_d``
    (optimiser state_dicts), ``early_stop`` (EarlyStopping.to_dict) and ``history`` (one
    metrics dict per epoch so far).
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / TRAIN_STATE_FILE
    torch.save(_cpu(state), path)
    return path


def load_train_state(dir: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read ``dir/train_state.pt`` with ``weights_only=True``; CheckpointError if absent."""
    path = Path(dir) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {dir} has no {TRAIN_STATE_FILE}: it cannot be resumed")
    return _load(path, device)


def load_checkpoint_weights(dir: str | Path, device: str | torch.device = "cpu") -> tuple:
    """(generator state_dict, meta) of ``dir/model.pt``, weights_only."""
    path = Path(dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    ckpt = _load(path, device)
    if not isinstance(ckpt, dict) or "generator" not in ckpt:
        raise CheckpointError(f"{path} is not a sar2opt checkpoint (no generator weights)")
    return ckpt["generator"], ckpt.get("meta", {})


def update_meta(dir: str | Path, **entries: object) -> dict:
    """Add ``entries`` to the metadata of ``dir/model.pt`` (and ``config.yaml``), weights
    untouched: what is learnt about a checkpoint after training (its uncertainty
    calibration). Returns the new meta."""
    ckpt, meta = _read(dir)
    meta = _plain({**meta, **entries})
    d = Path(dir)
    torch.save({**ckpt, "meta": meta}, d / MODEL_FILE)
    (d / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    return meta
