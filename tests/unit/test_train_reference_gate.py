"""The reference gate: a trained net under ``model.reference`` is kept only if it beats its
reference alone on the validation pixels; the scored pixels of a cloud-removal set are the
ones its input hides (``step.scored_mask``)."""

from __future__ import annotations

import numpy as np
import torch

from sar2opt.config import config_from_dict
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
