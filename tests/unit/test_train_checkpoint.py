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


def test_train_state_round_trip_resumes_the_optimiser(tmp_path: Path) -> None:
    """train_state.pt loads weights_only; the restored Adam takes the very same next step."""
    from sar2opt.train.checkpoint import load_train_state, save_train_state
    from sar2opt.train.schedule import EarlyStopping

    spec = ModelSpec(ngf=4, depth=2)
    torch.manual_seed(0)
    gen = build_generator(spec, 2, 4)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    x = torch.randn(2, 2, 16, 16)
    for _ in range(2):
        opt.zero_grad()
        gen(x).square().mean().backward()
        opt.step()
    stop = EarlyStopping(patience=3).update(1, 0.2).update(2, 0.3)
    history = [{"epoch": 1, "val_mae_refl": 0.2}, {"epoch": 2, "val_mae_refl": 0.3}]
    save_checkpoint(tmp_path, gen, make_meta(spec))
    save_train_state(
        tmp_path,
        {"epoch": 2, "step": 2, "disc": None, "opt_g": opt.state_dict(), "opt_d": None,
         "early_stop": stop.to_dict(), "history": history},
    )  # fmt: skip
    state = load_train_state(tmp_path)  # weights_only inside
    assert state["epoch"] == 2 and state["history"] == history
    assert EarlyStopping.from_dict(state["early_stop"]) == stop

    gen2, _ = load_generator(tmp_path)
    gen2.train()
    opt2 = torch.optim.Adam(gen2.parameters(), lr=1e-2)
    opt2.load_state_dict(state["opt_g"])
    for g, o in ((gen, opt), (gen2, opt2)):
        o.zero_grad()
        g(x).square().mean().backward()
        o.step()
    for a, b in zip(gen.parameters(), gen2.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        load_train_state(tmp_path / "nothing")


def test_run_log_writes_csv_and_tensorboard_to_remote_uri(tmp_path: Path) -> None:
    """A URI run directory (file:// here, s3:// in production) gets a copy after each epoch."""
    import csv

    from sar2opt.train.loop import METRIC_COLUMNS, RunLog

    dest = tmp_path / "bucket" / "run"
    log = RunLog(f"file://{dest}")
    history = []
    for e in (1, 2):
        m = {"epoch": e, "g_l1": 1.0 / e, "val_mae_refl": 0.1 / e, "val_psnr_db": float("inf")}
        history.append(m)
        log.epoch(m, history)
    log.close()
    rows = list(csv.DictReader(open(dest / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and list(rows[0]) == list(METRIC_COLUMNS)
    events = list((dest / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(dest / "tensorboard"))
    acc.Reload()
    vals = [(s.step, round(s.value, 6)) for s in acc.Scalars("val_mae_refl")]
    assert vals == [(1, 0.1), (2, 0.05)]
    assert "val_psnr_db" not in acc.Tags()["scalars"]  # inf is not logged


def test_previous_run_meta_and_resume_guard(tmp_path: Path) -> None:
    import json

    from sar2opt.train.trainer import TrainError, check_resumable, previous_run_meta

    assert previous_run_meta(str(tmp_path), "train") is None
    spec = ModelSpec(ngf=4, depth=2)
    run = tmp_path / "train"
    meta = {**make_meta(spec), "index_hash": "abc"}
    save_checkpoint(run / "checkpoint_1", build_generator(spec, 2, 4), meta)
    snap = {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_1"}}
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(snap))
    prev = previous_run_meta(str(tmp_path), "train")
    assert prev["epoch"] == 3 and prev["index_hash"] == "abc"
    check_resumable(prev, prev["model"], "abc", "r")  # same model, same patches: fine
    with pytest.raises(TrainError, match="another patch index"):
        check_resumable(prev, prev["model"], "xyz", "r")
    with pytest.raises(TrainError, match="different model"):
        check_resumable(prev, {**prev["model"], "ngf": 8}, "abc", "r")
