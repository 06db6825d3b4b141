"""The reference gate: a trained net under ``model.reference`` is kept only if it beats its
reference alone on the validation pixels; the scored pixels of a cloud-removal set are the
ones its input hides (``step.scored_mask``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.config import config_from_dict
from sar2opt.data.index import SPLITS
from sar2opt.data.inputs import MASK_CH
from sar2opt.models import build_generator
from sar2opt.models.reference import ReferenceGenerator, output_convs
from sar2opt.train.checkpoint import (
    UNTRAINED_NORM,
    load_generator,
    load_meta,
    save_checkpoint,
    save_untrained_checkpoint,
)
from sar2opt.train.reference_gate import (
    GATE_KEY,
    format_gate,
    gate_checkpoint,
    net_vs_reference,
)
from sar2opt.train.step import scored_mask

CFG = {"model": {"input_set": "SCO", "reference": "scene_fit", "ngf": 8, "depth": 3}}


def _batches(gen: ReferenceGenerator, n: int = 4, target: str = "reference", seed: int = 0):
    """Normalised SCO patches whose target is the model's own reference (or its output),
    half of each patch hidden in the cloudy input."""
    g = torch.Generator().manual_seed(seed)
    sar = torch.randn(n, 2, 32, 32, generator=g)
    prior = torch.randn(n, 4, 32, 32, generator=g)
    hidden = torch.zeros(n, 1, 32, 32)
    hidden[..., :16] = 1.0
    refl = torch.randn(n, 4, 32, 32, generator=g)
    cloudy = torch.cat([refl * (1 - hidden), hidden], dim=1)
    x = torch.cat([sar, cloudy, prior], dim=1)
    with torch.no_grad():
        opt = gen.reference(x) if target == "reference" else gen(x)
    batch = {
        "sar": sar,
        "cloudy": cloudy,
        "prior": prior,
        "opt": opt,
        "mask": torch.ones(n, 1, 32, 32),
    }
    return [{k: v.numpy() for k, v in batch.items()}]


def test_scored_mask_keeps_the_hidden_pixels_of_cloud_removal_sets_only() -> None:
    mask = torch.ones(2, 1, 4, 4)
    mask[0, 0, 0, 0] = 0  # a cloudy target pixel
    cloudy = torch.zeros(2, 4 + MASK_CH, 4, 4)
    cloudy[:, -1, :2] = 1.0  # the top half hidden in the input
    batch = {"opt": torch.zeros(2, 4, 4, 4), "mask": mask, "cloudy": cloudy}
    got = scored_mask(batch, "SCO")
    want = mask * cloudy[:, -1:]
    assert torch.equal(got, want) and got.sum() == 2 * 8 - 1
    assert scored_mask(batch, "SO") is mask  # no cloudy input: the clear pixels as before
    assert scored_mask({"opt": batch["opt"], "cloudy": cloudy}, "SC").sum() == 16


def test_a_net_worse_than_its_reference_is_zeroed_and_a_better_one_kept(tmp_path) -> None:
    cfg = config_from_dict(CFG)
    ckpt = save_untrained_checkpoint(tmp_path / "ck", cfg)
    gen, _ = load_generator(ckpt)
    assert isinstance(gen, ReferenceGenerator)
    torch.manual_seed(1)
    for conv in output_convs(gen.net):  # a "trained" net that moves off the reference
        torch.nn.init.normal_(conv.weight, std=0.5)
    save_checkpoint(ckpt, gen, load_meta(ckpt))
    # judged on pixels whose truth is the reference: the net only adds error
    got = gate_checkpoint(ckpt, _batches(gen))
    assert got["kept"] == "reference" and got["reference_mae"] < 1e-6 < got["net_mae"]
    gated, meta = load_generator(ckpt)
    assert meta[GATE_KEY]["kept"] == "reference"
    x = torch.cat([torch.from_numpy(_batches(gen)[0][k]) for k in ("sar", "cloudy", "prior")], 1)
    with torch.no_grad():
        assert torch.equal(gated(x), gated.reference(x))  # the checkpoint *is* its reference
    # a net whose output is the truth is kept, weights untouched
    ckpt2 = save_untrained_checkpoint(tmp_path / "ck2", cfg)
    gen2, _ = load_generator(ckpt2)
    for conv in output_convs(gen2.net):
        torch.nn.init.normal_(conv.weight, std=0.5)
    save_checkpoint(ckpt2, gen2, load_meta(ckpt2))
    got2 = gate_checkpoint(ckpt2, _batches(gen2, target="net"))
    assert got2["kept"] == "net" and got2["net_mae"] < 1e-6 < got2["reference_mae"]
    kept, _ = load_generator(ckpt2)
    for a, b in zip(kept.state_dict().values(), gen2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_gate_scores_in_reflectance_on_the_scored_pixels_only() -> None:
    cfg = config_from_dict(CFG)
    gen = build_generator(cfg.model, 2 + 5 + 4, 4, 0)
    b = _batches(gen)[0]
    b["opt"] = b["opt"] + 1.0  # off by 1 standard deviation everywhere...
    std = np.asarray(UNTRAINED_NORM["opt_std"])
    got = net_vs_reference(gen, [b], "SCO", std)
    # ... scored on the hidden half (4 patches x 32 x 16 px x 4 bands), in reflectance
    assert got["pixels"] == 4 * 32 * 16 * 4
    assert np.isclose(got["reference_mae"], std.mean(), rtol=1e-5)
    assert got["net_mae"] == got["reference_mae"]  # an untrained net is its reference


def test_the_gate_line_says_what_was_kept_and_when_nothing_could_be_judged() -> None:
    got = {"net_mae": 0.0123, "reference_mae": 0.0146, "pixels": 1000.0, "kept": "net"}
    assert "net MAE 0.0123, reference alone 0.0146: kept the net" in format_gate(got)
    assert "zeroed" in format_gate({**got, "kept": "reference"})
    assert "could not be judged" in format_gate({**got, "pixels": 0.0})


def _cube(path, seed: int = 0) -> None:
    """A 96 x 96 px SCO cube: 3 dates, date 1 cloudy in every other 8-column stripe (its
    cloud mask), dates 0 and 2 clear; reflectance a smooth function of the SAR."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    t, h, w = 3, 96, 96
    sar = rng.normal(-12.0, 2.0, (t, 2, h, w)).astype("float32")
    truth = (0.1 + 0.01 * (sar[:, :1] + 12.0)).repeat(4, axis=1)
    truth += np.linspace(0.0, 0.05, 4, dtype="float32")[None, :, None, None]
    cloud = np.zeros((t, h, w), bool)
    cloud[1] = (np.arange(w) // 8 % 2 == 0)[None, :]
    clear = ~cloud
    cloudy = np.concatenate([np.where(cloud[:, None], np.nan, truth), cloud[:, None]], axis=1)
    prior = truth + 0.02
    opt = ["B02", "B03", "B04", "B08"]
    bands = ["vv", "vh", *opt, "clear", *(f"prior_{b}" for b in opt)]
    bands += [*(f"cloudy_{b}" for b in opt), "cloud_mask"]
    data = np.concatenate([sar, truth, clear[:, None], prior, cloudy], axis=1).astype("float32")
    times = np.array(["2023-07-01", "2023-07-13", "2023-07-25"], "datetime64[ns]")
    coords = {"time": times, "band": np.array(bands, dtype=object)}
    ds = xr.DataArray(data, dims=("time", "band", "y", "x"), coords=coords).to_dataset(name="cube")
    ds.attrs.update({"sar_bands": ["vv", "vh"], "opt_bands": opt})
    ds.to_zarr(path)


def _moving_checkpoint(tmp_path, std: float):
    """A cube (``_cube``) and an untrained CFG checkpoint whose net's output convolutions
    are drawn with ``std`` (seed 1), saved: a net that moves off its reference and whose
    flips disagree. Returns (cube path, checkpoint, generator, metadata)."""
    cube = tmp_path / "c.zarr"
    _cube(cube)
    ckpt = save_untrained_checkpoint(tmp_path / "ck", config_from_dict(CFG))
    gen, meta = load_generator(ckpt)
    torch.manual_seed(1)
    for conv in output_convs(gen.net):
        torch.nn.init.normal_(conv.weight, std=std)
    save_checkpoint(ckpt, gen, meta)
    return cube, ckpt, gen, meta


def test_the_gate_judges_whole_val_blocks_through_the_inference_predictor(
    tmp_path, monkeypatch
) -> None:
    """A net that moves off its reference is scored as inference runs it: the cube's val
    blocks predicted whole, under a real cloud mask laid on the clear dates; it loses and is
    zeroed. A cube too large to hold falls back to the val patches."""
    from sar2opt.data.index import split_pixels
    from sar2opt.train import reference_gate

    cfg = config_from_dict(CFG)
    _, ckpt, _, _ = _moving_checkpoint(tmp_path, std=0.5)
    got = gate_checkpoint(ckpt, [], cube_paths=[tmp_path / "c.zarr"], flips=1)
    assert got["judged_on"] == "val blocks through the inference predictor"
    assert got["kept"] == "reference" and got["reference_mae"] < got["net_mae"]
    # scored: the val pixels of the clear dates (0, 2) under the laid stripes of date 1
    val = split_pixels(96, 96, cfg.patches, "val")
    stripes = (np.arange(96) // 8 % 2 == 0)[None, :]
    assert val.any() and got["pixels"] == 2 * int((val & stripes).sum())
    assert got["per_cube"] and [c["pixels"] for c in got["per_cube"].values()] == [got["pixels"]]
    gen2, meta2 = load_generator(ckpt)
    assert all(float(c.weight.detach().abs().max()) == 0.0 for c in output_convs(gen2.net))
    assert meta2[GATE_KEY]["kept"] == "reference"
    # too large to hold: the val patches decide
    monkeypatch.setattr(reference_gate, "GATE_SCENE_MAX_PX", 10)
    got = gate_checkpoint(ckpt, _batches(gen2), cube_paths=[tmp_path / "c.zarr"])
    assert got["judged_on"] == "val patches"


def test_the_calibration_is_fitted_and_checked_on_whole_blocks_through_the_predictor(
    tmp_path,
) -> None:
    """With cubes small enough to hold, the uncertainty calibration is fitted on the val
    blocks' hidden pixels as inference predicts them (the scene whole, real cloud masks laid)
    and checked on the test blocks' the same way: every scored pixel of each split counts,
    once per hypothesis count, and the stored map is the one those pixels give."""
    import pandas as pd

    from sar2opt.data.index import split_pixels
    from sar2opt.infer.calibration import CALIBRATION_KEY, describe, fit_calibration
    from sar2opt.train.calibrate import (
        CALIBRATED_FLIPS,
        calibrate_checkpoint,
        scene_spread_and_error,
    )
    from sar2opt.train.reference_gate import held_scenes

    cfg = config_from_dict(CFG)
    cube, ckpt, gen, _ = _moving_checkpoint(tmp_path, std=0.05)  # the flips disagree
    index = pd.DataFrame({"split": ["train", "val", "test"]})
    got = calibrate_checkpoint(ckpt, str(cube), index, {}, seed=0, cube_paths=[cube])
    assert got["on"] == "blocks through the inference predictor" and got["split"] == "test"
    stripes = (np.arange(96) // 8 % 2 == 0)[None, :]  # date 1's clouds, laid on dates 0, 2
    n = {s: 2 * int((split_pixels(96, 96, cfg.patches, s) & stripes).sum()) for s in SPLITS}
    assert n["val"] > 0 and n["test"] > 0
    assert sum(r["pixels"] for r in got["deciles"]) == n["test"]
    knots = load_meta(ckpt)[CALIBRATION_KEY]
    assert [k["flips"] for k in knots] == list(CALIBRATED_FLIPS)
    assert all(k["pixels"] == n["val"] for k in knots)
    assert all(k["fitted_on"] == "blocks through the inference predictor" for k in knots)
    said = describe(knots[0])  # what the mosaic's attrs say
    assert f"fitted on {n['val']} validation pixels of blocks through the inference" in said
    assert "scaled by how far it extrapolates" in said
    s, e = scene_spread_and_error(
        gen, load_meta(ckpt), held_scenes(load_meta(ckpt), [cube], "val"), (2,)
    )[2]
    want = fit_calibration(s, e)
    two = next(k for k in knots if k["flips"] == 2)
    np.testing.assert_allclose(two["spread"], want["spread"], rtol=1e-5)
    np.testing.assert_allclose(two["abs_error"], want["abs_error"], rtol=1e-5)


def test_with_several_cubes_each_counts_alike_not_each_pixel() -> None:
    """The gate's number is the geometric mean of each cube's net / reference: a net that
    gains 1 % on the cube with most pixels and loses 35 % on another is zeroed, though its
    pooled MAE is the lower; one cube alone (or none) is its pooled ratio."""
    from sar2opt.train.reference_gate import net_to_reference

    per = {
        "big": {"net": 0.0249, "reference": 0.0251, "pixels": 100_000},
        "small": {"net": 0.0070, "reference": 0.0052, "pixels": 1_000},
    }
    n = sum(c["pixels"] for c in per.values())
    pooled = {k: sum(c[k] * c["pixels"] for c in per.values()) / n for k in ("net", "reference")}
    got = {"net_mae": pooled["net"], "reference_mae": pooled["reference"], "pixels": n}
    assert got["net_mae"] < got["reference_mae"]  # pooled, the net looks better
    ratio = net_to_reference(got | {"per_cube": per})
    assert ratio == pytest.approx(np.sqrt(0.0249 / 0.0251 * 0.0070 / 0.0052))
    assert ratio > 1.1
    assert net_to_reference(got) == pytest.approx(pooled["net"] / pooled["reference"])
    assert net_to_reference(got | {"per_cube": {"big": per["big"]}}) < 1.0
    assert np.isnan(net_to_reference({"net_mae": np.nan, "reference_mae": np.nan, "pixels": 0}))
    line = format_gate(got | {"per_cube": per, "ratio": ratio, "kept": "reference"})
    assert "small 0.0070 vs 0.0052; net / reference 1.156 (each cube alike)" in line
    assert "zeroed" in line


def test_a_held_scene_fits_its_blended_reference_once_for_every_pass(tmp_path, monkeypatch) -> None:
    """The gate's two models and the calibration's flip counts are one checkpoint on one
    scene: the blended reference of each date is fitted once, and a pass that reuses it
    predicts exactly what a pass fitting it anew does."""
    from sar2opt.infer.predictor import TilePredictor
    from sar2opt.train.calibrate import scene_spread_and_error
    from sar2opt.train.reference_gate import held_scenes, scene_predictions

    cube, _, gen, meta = _moving_checkpoint(tmp_path, std=0.05)
    calls = []
    fit = TilePredictor.reference_fields
    monkeypatch.setattr(
        TilePredictor, "reference_fields", lambda self, *a: calls.append(1) or fit(self, *a)
    )
    (hs,) = held_scenes(meta, [cube], "val")
    got = scene_spread_and_error(gen, meta, [hs], (2, 3, 4))
    reused = scene_predictions(gen, hs, 2)
    assert len(calls) == 3 == len(hs.fields)  # one fit per date for four passes
    (fresh,) = held_scenes(meta, [cube], "val")
    anew = scene_predictions(gen, fresh, 2)
    assert len(calls) == 6
    np.testing.assert_array_equal(reused.pred, anew.pred)
    np.testing.assert_array_equal(reused.uncertainty, anew.uncertainty)
    assert all(got[k][0].size > 0 for k in (2, 3, 4))


def test_a_calibration_whose_test_blocks_cannot_be_held_says_it_was_checked_on_patches(
    tmp_path, monkeypatch
) -> None:
    """Fitted on the val blocks held whole, but no cube's test blocks can be (here: none
    gets a cloud laid): the check falls back to the test patches, and the record says so
    instead of claiming blocks for both."""
    import pandas as pd

    from sar2opt.train import reference_gate
    from sar2opt.train.calibrate import calibrate_checkpoint
    from sar2opt.train.trainer import _as

    cube = tmp_path / "c.zarr"
    _cube(cube)
    ckpt = save_untrained_checkpoint(tmp_path / "ck", config_from_dict(CFG))
    held = reference_gate.held_scenes
    monkeypatch.setattr(
        reference_gate,
        "held_scenes",
        lambda meta, paths, split, seed=0: (
            [] if split == "test" else held(meta, paths, split, seed)
        ),
    )
    seen = []
    monkeypatch.setattr(
        "sar2opt.train.calibrate.spread_and_error",
        lambda *a, **k: seen.append(a[3]) or {2: (np.full(10, 0.01), np.full(10, 0.02))},
    )
    index = pd.DataFrame({"split": ["train", "val", "test"]})
    got = calibrate_checkpoint(ckpt, str(cube), index, {}, seed=0, cube_paths=[cube])
    assert got["on"] == "blocks through the inference predictor"
    assert got["checked_on"] == "patches"
    assert list(seen[0]["split"]) == ["test"]  # the patches it fell back to
    assert sum(r["pixels"] for r in got["deciles"]) == 10
    assert _as(got) == "fitted as blocks through the inference predictor, checked as patches"


def test_the_gate_and_the_calibration_share_one_hold_of_the_val_blocks(
    tmp_path, monkeypatch
) -> None:
    """The trainer holds the val blocks once for the gate and the calibration: the cube is
    loaded once for them (and once for the test check) and each date's blended reference
    fitted once, and what both record is what each finds holding the blocks itself."""
    import shutil

    import pandas as pd

    from sar2opt.evaluate import protocol
    from sar2opt.infer.calibration import CALIBRATION_KEY
    from sar2opt.infer.predictor import TilePredictor
    from sar2opt.train.calibrate import calibrate_checkpoint
    from sar2opt.train.reference_gate import SharedScenes

    cube, ckpt, _, _ = _moving_checkpoint(tmp_path, std=0.05)
    alone = shutil.copytree(ckpt, tmp_path / "alone")
    index = pd.DataFrame({"split": ["train", "val", "test"]})

    loads, fits = [], []
    load, fit = protocol.load_scene, TilePredictor.reference_fields
    monkeypatch.setattr(protocol, "load_scene", lambda *a, **k: loads.append(1) or load(*a, **k))
    monkeypatch.setattr(
        TilePredictor, "reference_fields", lambda self, *a: fits.append(1) or fit(self, *a)
    )
    shared = SharedScenes(load_meta(ckpt), [cube], "val", 3)
    gate = gate_checkpoint(ckpt, [], cube_paths=[cube], flips=1, seed=3, scenes=shared)
    per_date = len(fits)
    assert per_date > 0 and len(loads) == 1
    rel = calibrate_checkpoint(ckpt, str(cube), index, {}, seed=3, cube_paths=[cube],
                               val_scenes=shared)  # fmt: skip
    assert len(loads) == 2  # the test split's
    assert len(fits) == 2 * per_date  # the val dates once for both, then the test dates
    assert shared._scenes is None  # released before the test split was held

    gate2 = gate_checkpoint(alone, [], cube_paths=[cube], flips=1, seed=3)
    rel2 = calibrate_checkpoint(alone, str(cube), index, {}, seed=3, cube_paths=[cube])
    assert len(loads) == 5  # each held the val blocks anew
    assert gate == gate2 and rel == rel2
    assert load_meta(ckpt)[CALIBRATION_KEY] == load_meta(alone)[CALIBRATION_KEY]
