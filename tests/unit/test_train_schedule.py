"""Pure training-schedule pieces: LR per epoch, early stopping, precision, CPUs per worker."""

from __future__ import annotations

import math

import pytest

from sar2opt.errors import ConfigError
from sar2opt.train.schedule import (
    EarlyStopping,
    auto_cpus_per_worker,
    lr_factor,
    resolve_precision,
)


def test_constant_and_warmup() -> None:
    assert [lr_factor(e, 5) for e in range(1, 6)] == [1.0] * 5
    # 3 warmup epochs: 1/4, 2/4, 3/4, then the full rate
    assert [lr_factor(e, 6, "constant", 3) for e in range(1, 6)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_decays_from_one_without_reaching_zero() -> None:
    f = [lr_factor(e, 5, "cosine", 1) for e in range(1, 6)]
    # warmup 1/2, then 0.5 * (1 + cos(pi * t)) for t = 0, 1/4, 2/4, 3/4
    want = [0.5] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert f == pytest.approx(want)
    assert f[1] == 1.0 and f[3] == pytest.approx(0.5) and 0 < f[-1] < 0.15
    assert all(a > b for a, b in zip(f[1:], f[2:], strict=False))


def test_bad_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lr_schedule"):
        lr_factor(1, 3, "step")
    with pytest.raises(ConfigError, match="warmup"):
        lr_factor(1, 3, "cosine", -1)


def test_early_stopping_state_machine() -> None:
    s = EarlyStopping(patience=2, min_delta=0.01)
    seq = [0.50, 0.45, 0.445, 0.46, 0.30, 0.295, 0.299]
    states = []
    for epoch, v in enumerate(seq, 1):
        s = s.update(epoch, v)
        states.append((s.best_epoch, s.bad_epochs, s.stop))
    # 0.445 is within min_delta of 0.45: not an improvement; 0.30 resets the count
    assert states == [
        (1, 0, False), (2, 0, False), (2, 1, False), (2, 2, True),
        (5, 0, False), (5, 1, False), (5, 2, True),
    ]  # fmt: skip
    assert s.best == 0.30
    # The state survives a round trip through plain types (the checkpoint).
    assert EarlyStopping.from_dict(s.to_dict()) == s


def test_patience_zero_never_stops_and_nan_is_no_improvement() -> None:
    s = EarlyStopping()
    for e in range(1, 20):
        s = s.update(e, 1.0)
    assert not s.stop and s.bad_epochs == 18
    s = EarlyStopping(patience=1).update(1, 0.2).update(2, float("nan"))
    assert s.stop and s.best_epoch == 1
    with pytest.raises(ConfigError):
        EarlyStopping(patience=-1)


def test_resolve_precision() -> None:
    assert resolve_precision("auto", "cuda", False) == "bf16"
    assert resolve_precision("auto", "cpu", True) == "fp32"
    assert resolve_precision("bf16", "cpu", True) == "bf16"
    assert resolve_precision("bf16", "cpu", False) == "fp32"
    assert resolve_precision("fp32", "cuda", True) == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp16", "cuda", True)


def test_auto_cpus_leave_room_for_data() -> None:
    assert auto_cpus_per_worker(2, 2, False) == 0.75  # 0.5 CPU left to the read tasks
    assert auto_cpus_per_worker(2, 1, False) == 1.5
    assert auto_cpus_per_worker(16, 2, False) == 7.0  # 2 of 16 (1/8) for data
    assert auto_cpus_per_worker(64, 8, True) == 1.0  # a GPU worker needs one CPU to drive it
    with pytest.raises(ConfigError, match="num_workers"):
        auto_cpus_per_worker(2, 8, False)
