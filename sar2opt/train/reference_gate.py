"""After training: keep the net only if it beats its own reference on the validation split.

A model with ``model.reference`` starts as its reference (its output convolutions are zero)
and training moves it off. Nothing guarantees the move helps on pixels it never trained on:
on the real BioMassters chip (one 256 px scene) the trained nets of several runs erred 1.1-1.5x
more under laid real clouds than the scene fit they corrected. Epoch selection compares
epochs with each other, never with the untrained start. Here the best checkpoint and its
reference alone are scored on the same validation pixels (``step.scored_mask``: for cloud
removal, the pixels the input hides), and when the reference does at least as well the net's
output is zeroed: the checkpoint *is* its reference, and its metadata says so
(``reference_gate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from sar2opt.data.inputs import model_input
from sar2opt.models.reference import ReferenceGenerator, zero_output
from sar2opt.train.step import scored_mask

#: Validation patches read at most (a seeded draw), patches per forward batch.
GATE_MAX_PATCHES = 512
GATE_CHUNK = 32
GATE_KEY = "reference_gate"


@torch.no_grad()
def net_vs_reference(
    gen: ReferenceGenerator,
    batches: Iterable[Mapping[str, np.ndarray]],
    input_set: str,
    opt_std: np.ndarray,
) -> dict[str, float]:
    """MAE (reflectance) of ``gen`` and of its reference alone over the scored pixels of
    ``batches`` (normalised patches as the stream gives them); ``pixels`` counted."""
    gen.eval()
    scale = torch.as_tensor(np.asarray(opt_std, dtype=np.float32)).view(1, -1, 1, 1)
    sums = {"net": 0.0, "reference": 0.0, "pixels": 0.0}
    for b in batches:
        t = {k: torch.as_tensor(np.asarray(v)) for k, v in b.items()}
        x = model_input(t, input_set).float()
        m = scored_mask(t, input_set)
        m = torch.ones_like(t["opt"][:, :1]) if m is None else (m > 0).float()
        ref = gen.reference(x)
        for name, y in (("net", gen(x)), ("reference", ref)):
            err = ((y.float() - t["opt"]).abs() * scale * m).sum()
            sums[name] += float(err)
        sums["pixels"] += float(m.sum()) * t["opt"].shape[1]
    n = max(sums["pixels"], 1.0)
    return {
        "net_mae": sums["net"] / n,
        "reference_mae": sums["reference"] / n,
        "pixels": sums["pixels"],
    }


def gate_checkpoint(ckpt_dir: str | Path, batches: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Score the checkpoint's net and its reference on ``batches`` (validation patches);
    zero the net when the reference does at least as well. Returns what was measured and
    kept (``{"net_mae", "reference_mae", "pixels", "kept": "net" | "reference"}``), also
    stored in the metadata; ``{}`` for a model without a reference."""
    from sar2opt.train.checkpoint import load_generator, save_checkpoint

    gen, meta = load_generator(ckpt_dir)
    if not isinstance(gen, ReferenceGenerator):
        return {}
    got = net_vs_reference(gen, batches, meta.get("input_set", "S"), meta["norm"]["opt_std"])
    if got["pixels"] == 0:
        got["kept"] = "net"  # nothing to judge on: leave the checkpoint as trained
    elif got["reference_mae"] <= got["net_mae"]:
        zero_output(gen.net)
        got["kept"] = "reference"
    else:
        got["kept"] = "net"
    save_checkpoint(ckpt_dir, gen, {**meta, GATE_KEY: got})
    return got


def val_batches(cube_path: str, index, read_kw: dict, seed: int = 0):
    """Normalised validation patches of ``index`` (a seeded draw of at most
    ``GATE_MAX_PATCHES``), ``GATE_CHUNK`` at a time, read as training reads them."""
    from sar2opt.data.stream import read_patches

    rows = index[index["split"] == "val"]
    if len(rows) > GATE_MAX_PATCHES:
        pick = np.random.default_rng(seed).permutation(len(rows))[:GATE_MAX_PATCHES]
        rows = rows.iloc[np.sort(pick)]
    for i in range(0, len(rows), GATE_CHUNK):
        yield read_patches(cube_path, rows.iloc[i : i + GATE_CHUNK], **read_kw)


def format_gate(got: Mapping[str, object]) -> str:
    """One line for the training job's output."""
    if not got["pixels"]:
        return (
            "=== net vs its reference: the val split has no scored pixel (for cloud removal: "
            "no date with clouds to lay), so the net could not be judged and is kept"
        )
    kept = (
        "kept the net"
        if got["kept"] == "net"
        else "kept the reference alone (the net's output zeroed: it did not beat it)"
    )
    return (
        f"=== net vs its reference on the val split ({int(got['pixels'])} scored px x bands): "
        f"net MAE {got['net_mae']:.4f}, reference alone {got['reference_mae']:.4f}: {kept}"
    )
