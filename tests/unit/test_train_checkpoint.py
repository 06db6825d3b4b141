"""Checkpoint format: weights_only loadable, plain meta, identical outputs after reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from sar2opt.config import Config, ModelSpec, config_to_dict
from sar2opt.models import build_generator
from sar2opt.train.checkpoint import CheckpointError, load_generator, save_checkpoint


def make_meta(spec: ModelSpec) -> dict:
    return {
        "model": config_to_dict(spec),
        "in_bands": ["vv", "vh"],
        "out_bands": ["B02", "B03", "B04", "B08"],
        "norm": {
            "sar_mean": np.array([-12.0, -19.0], np.float32),  # numpy -> converted to lists
            "sar_std": [3.0, 3.0],
            "opt_mean": [0.05, 0.07, 0.06, 0.25],
            "opt_std": [0.02, 0.02, 0.03, 0.08],
        },
        "config": config_to_dict(Config(model=spec)),
        "git_sha": "abc123",
        "epoch": np.int64(3),
        "metrics": {"val_l1": np.float32(0.25)},
    }


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    spec = ModelSpec(ngf=8, depth=3)
    torch.manual_seed(0)
    gen = build_generator(spec, 2, 4)
    x = torch.randn(2, 2, 32, 32)
    gen.train()
    for _ in range(2):  # move BatchNorm running stats away from their initial values
        gen(torch.randn(4, 2, 32, 32) * 3 + 1)
    gen.eval()
    with torch.no_grad():
        want = gen(x)

    d = save_checkpoint(tmp_path / "ckpt", gen, make_meta(spec))
    raw = torch.load(d / "model.pt", weights_only=True)
    assert set(raw) == {"generator", "meta"}
    assert raw["meta"]["norm"]["sar_mean"] == [-12.0, -19.0]
    assert raw["meta"]["epoch"] == 3 and isinstance(raw["meta"]["epoch"], int)
    human = yaml.safe_load((d / "config.yaml").read_text())
    assert human["out_bands"] == ["B02", "B03", "B04", "B08"] and human["git_sha"] == "abc123"

    loaded, meta = load_generator(d)
    assert not loaded.training
    assert meta["model"]["ngf"] == 8 and meta["in_bands"] == ["vv", "vh"]
    with torch.no_grad():
        assert torch.equal(loaded(x), want)


def test_wrapped_model_saves_bare_keys(tmp_path: Path) -> None:
    spec = ModelSpec(ngf=4, depth=2)
    gen = build_generator(spec, 2, 4)
    wrapped = DistributedDataParallel.__new__(DistributedDataParallel)  # no process group
    torch.nn.Module.__init__(wrapped)
    wrapped.module = gen
    save_checkpoint(tmp_path, wrapped, make_meta(spec))
    keys = torch.load(tmp_path / "model.pt", weights_only=True)["generator"].keys()
    assert not any(k.startswith("module.") for k in keys)


def test_errors(tmp_path: Path) -> None:
    spec = ModelSpec(ngf=4, depth=2)
    gen = build_generator(spec, 2, 4)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_generator(tmp_path / "missing")
    with pytest.raises(TypeError, match="not a plain type"):
        save_checkpoint(tmp_path, gen, {**make_meta(spec), "spec": spec})
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path, gen, {"model": {}})
    meta = make_meta(spec)
    meta["model"] = {**meta["model"], "ngf": 8}  # weights do not fit the spec
    save_checkpoint(tmp_path / "bad", gen, meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_generator(tmp_path / "bad")


@pytest.mark.parametrize(
    ("generator", "input_set", "fusion"),
    [("sardinet", "SOD", "intermediate"), ("unet", "SD", "early"), ("spade", "SO", "early")],
)
def test_round_trip_other_models_and_input_sets(
    tmp_path: Path, generator: str, input_set: str, fusion: str
) -> None:
    from sar2opt.data.inputs import input_channels

    spec = ModelSpec(generator=generator, ngf=4, depth=2, input_set=input_set, dem_fusion=fusion)
    in_ch, dem_ch = input_channels(input_set, 2, 4)
    torch.manual_seed(0)
    gen = build_generator(spec, in_ch, 4, dem_ch).eval()
    x = torch.randn(1, in_ch, 16, 16)
    with torch.no_grad():
        want = gen(x)
    meta = {**make_meta(spec), "input_set": input_set, "aux_bands": {"dem": ["dem"]}}
    save_checkpoint(tmp_path, gen, meta)
    loaded, meta = load_generator(tmp_path)
    assert meta["model"]["input_set"] == input_set and meta["input_set"] == input_set
    with torch.no_grad():
        assert torch.equal(loaded(x), want)
