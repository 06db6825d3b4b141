"""Pure pieces of the training schedule: learning rate per epoch, early stopping, precision,
CPUs per worker. No Ray, no models: each is a function of plain numbers, so the loop's
decisions are unit-testable and identical on every worker (they all see the same
all-reduced metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from sar2opt.config import LR_SCHEDULES, PRECISIONS
from sar2opt.errors import ConfigError

#: CPUs left to Ray Data's read tasks on a CPU-only node, at least (auto cpus_per_worker).
DATA_CPUS_MIN = 0.5


def lr_factor(epoch: int, epochs: int, schedule: str = "constant", warmup_epochs: int = 0) -> float:
    """Multiplier of the base learning rate during 1-based ``epoch`` of ``epochs``.

    Warmup ramps linearly (1/(w+1), 2/(w+1), ... for the first w epochs) so that Adam's early,
    noisy moment estimates do not take full-size steps; ``cosine`` then decays from 1 towards
    0 over the remaining epochs, never reaching 0 inside the run. A function of the epoch
    alone: a resumed run needs no scheduler state to get the same value.
    """
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown train.lr_schedule {schedule!r}; choices: {LR_SCHEDULES}")
    if warmup_epochs < 0:
        raise ConfigError(f"train.warmup_epochs must be >= 0, got {warmup_epochs}")
    if epoch <= warmup_epochs:
        return epoch / (warmup_epochs + 1)
    if schedule == "constant":
        return 1.0
    span = max(epochs - warmup_epochs, 1)
    t = (epoch - warmup_epochs - 1) / span  # 0 at the first epoch after warmup, < 1 at the end
    return 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class EarlyStopping:
    """Patience on a metric to minimise (val MAE). ``update`` returns the next state.

    An epoch improves when its value is below ``best - min_delta``; after ``patience``
    epochs in a row without improvement, ``stop`` is true. ``patience`` 0 never stops.
    Plain fields only: the state travels in the checkpoint and a resumed run continues it.
    """

    patience: int = 0
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.patience < 0 or self.min_delta < 0:
            raise ConfigError(
                f"train.patience and train.min_delta must be >= 0, got {self.patience}, "
                f"{self.min_delta}"
            )

    def update(self, epoch: int, value: float) -> EarlyStopping:
        if math.isfinite(value) and value < self.best - self.min_delta:
            return replace(self, best=float(value), best_epoch=int(epoch), bad_epochs=0)
        return replace(self, bad_epochs=self.bad_epochs + 1)

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def to_dict(self) -> dict:
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EarlyStopping:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def cpu_supports_bf16() -> bool:
    """Native bf16 on this CPU (AVX512-BF16 or AMX): otherwise autocast emulates it, slowly."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def resolve_precision(precision: str, device_type: str, cpu_bf16: bool) -> str:
    """``"bf16"`` or ``"fp32"`` for a device: auto = bf16 on CUDA, fp32 on CPU; an explicit
    bf16 on a CPU without native support falls back to fp32 (emulation is slower)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown train.precision {precision!r}; choices: {PRECISIONS}")
    if precision == "fp32":
        return "fp32"
    if device_type == "cuda":
        return "bf16"
    if precision == "bf16" and device_type == "cpu" and cpu_bf16:
        return "bf16"
    return "fp32"


def auto_cpus_per_worker(total_cpus: float, num_workers: int, use_gpu: bool) -> float:
    """CPUs per Train worker when ``train.cpus_per_worker`` is 0.

    Ray Data excludes the Train workers' CPUs from what its read tasks may use; workers that
    hold every CPU leave the reads none, and training waits forever for its first batch. GPU
    workers need 1 CPU to drive the GPU; CPU workers get what remains after
    max(DATA_CPUS_MIN, 1/8 of the CPUs) is left to the data, in quarter CPUs.
    """
    if num_workers < 1:
        raise ConfigError(f"train.num_workers must be >= 1, got {num_workers}")
    if use_gpu:
        return 1.0
    reserve = max(DATA_CPUS_MIN, total_cpus / 8)
    per = math.floor((total_cpus - reserve) / num_workers * 4) / 4
    if per < 0.25:
        raise ConfigError(
            f"{num_workers} training workers do not fit on {total_cpus:g} CPUs with "
            f"{reserve:g} left for data loading; lower train.num_workers"
        )
    return per
