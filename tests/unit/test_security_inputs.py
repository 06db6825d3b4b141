"""Untrusted inputs run no code: a checkpoint holding pickled code and a YAML config with a
Python tag are refused, and their payload (it would create a file) never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from sar2opt.config import load_config
from sar2opt.errors import ConfigError
from sar2opt.train.checkpoint import (
    MODEL_FILE,
    TRAIN_STATE_FILE,
    CheckpointError,
    load_checkpoint_weights,
    load_generator,
    load_train_state,
)


class SystemCall:
    """Unpickles as ``os.system(cmd)``: a GLOBAL to posix.system, then REDUCE."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class Planted:
    """A custom class whose unpickling (BUILD -> __setstate__) writes a file."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __setstate__(self, state: dict) -> None:
        Path(state["flag"]).write_text("pwned")


def _payloads(flag: Path) -> dict:
    return {"os.system": SystemCall(f"touch {flag}"), "custom class": Planted(str(flag))}


def _plant(ckpt: Path, name: str, payload: object) -> Path:
    """A checkpoint folder whose ``name`` file is a torch.save'd dict holding ``payload``
    beside real-looking keys."""
    ckpt.mkdir(parents=True, exist_ok=True)
    obj = {"generator": {"w": torch.zeros(2)}, "meta": {"in_bands": ["VV"]}, "x": payload}
    if name == TRAIN_STATE_FILE:
        obj = {"epoch": 1, "history": [], "x": payload}
    torch.save(obj, ckpt / name)
    return ckpt


@pytest.mark.parametrize("kind", ["os.system", "custom class"])
def test_the_payload_is_live(tmp_path: Path, kind: str) -> None:
    """Control: a plain (unsafe) unpickle of the same file does run the payload, so the
    refusals below are the loader's doing."""
    flag = tmp_path / "pwned"
    ckpt = _plant(tmp_path / "ckpt", MODEL_FILE, _payloads(flag)[kind])
    torch.load(ckpt / MODEL_FILE, weights_only=False)
    assert flag.exists()


LOADERS = {
    "load_generator": (load_generator, MODEL_FILE),
    "load_checkpoint_weights": (load_checkpoint_weights, MODEL_FILE),
    "load_train_state": (load_train_state, TRAIN_STATE_FILE),
}


@pytest.mark.parametrize("kind", ["os.system", "custom class"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path, loader: str, kind: str) -> None:
    fn, name = LOADERS[loader]
    flag = tmp_path / "pwned"
    ckpt = _plant(tmp_path / "ckpt", name, _payloads(flag)[kind])
    with pytest.raises((pickle.UnpicklingError, CheckpointError)) as e:
        fn(ckpt)
    assert not flag.exists(), "the checkpoint's pickled code ran"
    # torch's weights_only unpickler names what it refused
    assert "weights only" in str(e.value).lower() or "weights_only" in str(e.value)


PY_TAG = "!!python/object/apply:os.system"


def test_yaml_config_with_python_tag_is_refused(tmp_path: Path) -> None:
    flag = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"train:\n  epochs: {PY_TAG} ['touch {flag}']\n")
    # Control: an unsafe loader runs it.
    control = tmp_path / "control"
    yaml.unsafe_load(f"a: {PY_TAG} ['touch {control}']")
    assert control.exists()
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)
    assert not flag.exists(), "the config's Python tag ran"


def test_yaml_override_with_python_tag_runs_nothing(tmp_path: Path) -> None:
    """`--set section.key=VALUE` parses VALUE as YAML too: safe_load, so a tag is refused."""
    flag = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="train.epochs: value is not valid YAML"):
        load_config(None, [f"train.epochs={PY_TAG} ['touch {flag}']"])
    assert not flag.exists(), "the override's Python tag ran"
