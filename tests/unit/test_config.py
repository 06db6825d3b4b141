"""load_config validates every section at load time: bad choices and sizes name their key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sar2opt import config
from sar2opt.config import Config, config_from_dict, config_to_dict, load_config
from sar2opt.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# (override, the key the error names, what it must say): one per rule of validate_config.
BAD = [
    ("train.loss=l2", "train.loss", "choices: l1, mse_mae"),
    ("train.gan_mode=wgan", "train.gan_mode", "choices: vanilla, lsgan, hinge"),
    ("train.lr_schedule=step", "train.lr_schedule", "choices: constant, cosine"),
    ("train.precision=fp16", "train.precision", "choices: auto, bf16, fp32"),
    ("model.generator=resnet", "model.generator", "choices: unet, pix2pixhd, spade"),
    ("model.discriminator=nope", "model.discriminator", "choices: patchgan, multiscale, none"),
    ("model.refine=swin", "model.refine", "choices: none, restormer"),
    ("model.dem_fusion=mid", "model.dem_fusion", "choices: early, intermediate, late"),
    ("model.input_set=SAR", "model.input_set", "choices: S, SD, SO, SOD"),
    ("model.depth=0", "model.depth", ">= 1"),
    ("model.dropout=1", "model.dropout", "[0, 1)"),
    ("train.epochs=0", "train.epochs", ">= 1"),
    ("train.num_workers=0", "train.num_workers", ">= 1"),
    ("train.d_every=0", "train.d_every", ">= 1"),
    ("train.lr=-1", "train.lr", ">= 0"),
    ("train.grad_clip=-0.5", "train.grad_clip", ">= 0"),
    ("train.patience=-1", "train.patience", ">= 0"),
    ("train.max_failures=-2", "train.max_failures", ">= -1"),
    ("train.run_name=''", "train.run_name", "empty"),
    ("patches.patch_px=0", "patches.patch_px", "> 0"),
    ("patches.min_clear_frac=1.5", "patches.min_clear_frac", "[0, 1]"),
    ("patches.val_frac=-0.1", "patches.val_frac", "[0, 1]"),
    ("patches.test_frac=0.9", "patches.val_frac + patches.test_frac", "< 1"),
    ("patches.block_px=16", "patches.block_px", "at least patches.patch_px"),
    ("patches.gap_px=-1", "patches.gap_px", ">= 0"),
    ("cube.res_m=0", "cube.res_m", "> 0"),
    ("cube.tile_px=1000", "cube.tile_px", "multiple of cube.chunk_px"),
    ("cube.cpus_per_tile=0", "cube.cpus_per_tile", "> 0"),
    ("cube.cloud_whiteness=2", "cube.cloud_whiteness", "[0, 1]"),
    ("cube.cloud_dilate_px=-1", "cube.cloud_dilate_px", ">= 0"),
    ("catalog.opt_bands=[]", "catalog.opt_bands", "empty"),
    ("catalog.timeout_s=0", "catalog.timeout_s", "> 0"),
    ("infer.tile_px=100", "infer.tile_px", "positive multiple of 32"),
    ("infer.overlap_px=256", "infer.overlap_px", "[0, tile_px)"),
    ("infer.num_actors=0", "infer.num_actors", ">= 1"),
    ("infer.gpus_per_actor=-1", "infer.gpus_per_actor", ">= 0"),
    ("infer.tta_flips=5", "infer.tta_flips", "1..4"),
    ("infer.actor_resources={CPU: 1}", "infer.actor_resources", "not a custom resource"),
    ("infer.actor_resources={infer_node: 0}", "infer.actor_resources.infer_node", "> 0"),
    ("infer.actor_resources=[infer_node]", "infer.actor_resources", "mapping"),
]


@pytest.mark.parametrize(("override", "key", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_a_config_error_naming_the_key(override: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value) and says in str(e.value)


def test_block_smaller_than_a_set_patch_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"patches.block_px \(64\) must be at least patches.patch_px \(128\)"
    ):
        load_config(None, ["patches.patch_px=128", "patches.block_px=64"])
    load_config(None, ["patches.block_px=64"])  # auto patches: 64 or 32 px fit a 64 px block


GOOD = [
    *[f"train.loss={v}" for v in config.RECON_LOSSES],
    *[f"train.gan_mode={v}" for v in config.GAN_MODES],
    *[f"train.lr_schedule={v}" for v in config.LR_SCHEDULES],
    *[f"train.precision={v}" for v in config.PRECISIONS],
    *[f"model.generator={v}" for v in config.GENERATOR_NAMES],
    *[f"model.discriminator={v}" for v in config.DISCRIMINATOR_NAMES],
    *[f"model.refine={v}" for v in config.REFINER_NAMES],
    *[f"model.dem_fusion={v}" for v in config.DEM_FUSIONS],
    *[f"model.input_set={v}" for v in config.INPUT_SET_NAMES],
    "train.lr=0",  # the early-stopping test trains with a frozen model
    "train.max_failures=-1",
    "patches.block_px=128",
    "patches.gap_px=0",
    "cube.tile_px=2048",
    "infer.tile_px=128",
    "infer.tta_flips=1",
    "infer.actor_resources={infer_node: 0.5}",
]


@pytest.mark.parametrize("override", GOOD)
def test_allowed_values_pass(override: str) -> None:
    load_config(None, [override])


def test_shipped_configs_and_defaults_are_valid() -> None:
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        load_config(path)
    assert config.validate_config(Config()) == Config()


def test_saved_configs_are_records_not_validated() -> None:
    saved = config_to_dict(Config())
    saved["train"]["loss"] = "an old loss"
    assert config_from_dict(saved, saved=True).train.loss == "an old loss"
    with pytest.raises(ConfigError, match="train.loss"):
        config_from_dict(saved)


def test_choice_tuples_equal_the_registries() -> None:
    from sar2opt.data.inputs import INPUT_SETS
    from sar2opt.infer.predictor import FLIPS
    from sar2opt.infer.tiles import MULTIPLE
    from sar2opt.models import DISCRIMINATORS, GENERATORS, REFINERS

    assert tuple(GENERATORS) == config.GENERATOR_NAMES
    assert tuple(DISCRIMINATORS) == config.DISCRIMINATOR_NAMES
    assert tuple(REFINERS) == config.REFINER_NAMES
    assert tuple(INPUT_SETS) == config.INPUT_SET_NAMES
    assert MULTIPLE == config.INFER_TILE_MULTIPLE
    assert len(FLIPS) == config.MAX_TTA_FLIPS


def test_a_typo_fails_fast_without_torch_or_ray() -> None:
    code = textwrap.dedent(
        """
        import sys, time
        t0 = time.perf_counter()
        from sar2opt.config import load_config
        from sar2opt.errors import ConfigError
        try:
            load_config("jobs/configs/demo.yaml", ["train.gan_mode=lsgna"])
        except ConfigError as e:
            print("error:", e)
        print("seconds", time.perf_counter() - t0)
        print("heavy", sorted(m for m in ("torch", "ray") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert "error: unknown train.gan_mode 'lsgna'; choices: vanilla, lsgan, hinge" in out
    assert "heavy []" in out
    assert float(out.split("seconds ")[1].split()[0]) < 1.0


def test_config_defaults_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 3\ncatalog:\n  opt_bands: [B02, B03, B04]\n")
    cfg = load_config(p, ["train.lr=0.001", "cube.epsg=32721"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001 and cfg.cube.epsg == 32721
    assert cfg.catalog.opt_bands == ("B02", "B03", "B04")
    assert config_to_dict(cfg)["catalog"]["opt_bands"] == ["B02", "B03", "B04"]
    with pytest.raises(ConfigError, match="unknown key.*epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown key.*trian"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 5  # type: ignore[misc]


def test_config_float_fields_accept_ints():
    cfg = load_config(None, ["cube.max_dt_days=3"])
    assert cfg.cube.max_dt_days == 3.0 and isinstance(cfg.cube.max_dt_days, float)
    assert np.isclose(cfg.cube.res_m, 10.0)


def test_retired_key_is_dropped_from_saved_configs_and_explained_in_new_ones():
    # checkpoints written before infer.inflight_mb was removed still load
    saved = config_to_dict(Config())
    saved["infer"]["inflight_mb"] = 256.0
    assert config_from_dict(saved, saved=True) == Config()
    with pytest.raises(ConfigError, match="infer.inflight_mb was removed: .*calls_per_actor"):
        load_config(None, ["infer.inflight_mb=256"])
