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

Judged as inference runs the model. Training patches are small (32 px when a 120-px cube is
among the training cubes), and a scene fit over a patch is noisier than over inference's
window: a net trained to correct the noisy fit can undo a good one. On the three real sets
trained together, the net beat its reference on the val patches (0.0084 vs 0.0106) yet erred
1.5x more than it on BioMassters' test blocks through the predictor (0.0210 vs 0.0137). So
when every training cube is small enough to hold (``GATE_SCENE_MAX_PX``), the gate scores
each cube's whole val blocks through the inference predictor (``scene_gate``: its windows,
flips and reference, real clouds laid as ``jobs/evaluate.py`` lays them); above that, a
sample of val patches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sar2opt.data.inputs import REF_KEY, model_input
from sar2opt.models.reference import ReferenceGenerator, zero_output
from sar2opt.train.step import scored_mask

if TYPE_CHECKING:
    from sar2opt.evaluate.protocol import Prediction, Scene
    from sar2opt.infer.run import FitLattice

#: Validation patches read at most (a seeded draw), patches per forward batch.
GATE_MAX_PATCHES = 512
GATE_CHUNK = 32
GATE_KEY = "reference_gate"
#: Pixels per date up to which a training cube is held whole for the gate (scene_gate).
GATE_SCENE_MAX_PX = 2048 * 2048


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
        ref = t[REF_KEY] if REF_KEY in t else gen.reference(x)  # the stream's context fit
        for name, y in (("net", gen(x, ref=ref)), ("reference", ref)):
            err = ((y.float() - t["opt"]).abs() * scale * m).sum()
            sums[name] += float(err)
        sums["pixels"] += float(m.sum()) * t["opt"].shape[1]
    n = max(sums["pixels"], 1.0)
    return {
        "net_mae": sums["net"] / n,
        "reference_mae": sums["reference"] / n,
        "pixels": sums["pixels"],
    }


def _split_pixels(meta: dict, cube_path: str, h: int, w: int, split: str) -> np.ndarray:
    """The checkpoint's ``split`` blocks of a training cube (its record, or its config's
    split); none when the cube has no block of that split."""
    from sar2opt.config import PatchSpec, config_from_dict
    from sar2opt.data.index import split_pixels
    from sar2opt.evaluate.holdout import held_out_pixels

    held = held_out_pixels(meta, cube_path, h, w, split)
    if held is not None:
        return held.pixels if held.split == split else np.zeros((h, w), bool)
    pspec = config_from_dict(meta.get("config") or {}, saved=True).patches
    return split_pixels(h, w, pspec or PatchSpec(), split)


@dataclass(frozen=True)
class HeldScene:
    """One training cube's ``split`` blocks as inference meets them: the whole scene (its
    truth), what the model is fed (``seen``: a cloud-removal model's input under real cloud
    masks laid on clear dates, ``evaluate.protocol.lay_clouds``), the pixels scored
    (``score``: the split's clear pixels, for cloud removal only under the laid clouds),
    the checkpoint's metadata for the cube and the scene's inference lattice (``fits``, for
    a scene-fit reference blended as inference writes it). ``fields`` keeps that reference
    per date once fitted: the gate's net and zeroed copy, and the calibration's flip counts,
    are one checkpoint on one scene and share it."""

    name: str
    meta: dict
    scene: Scene
    seen: Scene
    score: np.ndarray  # (T, H, W) bool
    held: np.ndarray  # (H, W) bool: the split's blocks
    fits: FitLattice
    fields: dict[int, dict[str, np.ndarray] | None] = field(
        default_factory=dict, compare=False, repr=False
    )


def held_scenes(
    meta: dict, cube_paths: Sequence[str | Path], split: str, seed: int = 0
) -> list[HeldScene] | None:
    """Each cube's ``split`` blocks as a :class:`HeldScene` (cubes without such a block, or
    for cloud removal without a date to lay a cloud on, are left out); None when a cube is
    larger than ``GATE_SCENE_MAX_PX`` per date (too large to hold whole)."""
    import xarray as xr

    from sar2opt.data.inputs import uses_cloudy
    from sar2opt.evaluate.holdout import meta_for_cube
    from sar2opt.evaluate.protocol import CloudLaySpec, lay_clouds, load_scene
    from sar2opt.infer.predictor import checkpoint_input_set
    from sar2opt.infer.run import scene_fits
    from sar2opt.train.trainer import cube_name

    for path in cube_paths:
        sizes = xr.open_zarr(path)["cube"].sizes
        if sizes["y"] * sizes["x"] > GATE_SCENE_MAX_PX:
            return None
    cloudy = uses_cloudy(checkpoint_input_set(meta))
    out = []
    for path in cube_paths:
        m = meta_for_cube(meta, path)
        scene = load_scene(str(path), list(m["out_bands"]), m.get("aux_bands"))
        h, w = scene.clear.shape[1:]
        held = _split_pixels(m, str(path), h, w, split)
        if not held.any():
            continue
        seen, score = scene, scene.clear & held[None]
        if cloudy:
            try:
                seen, laid, _ = lay_clouds(scene, seed, CloudLaySpec(), held, held)
            except ValueError:
                continue  # no clear date to lay a cloud on
            score = score & laid
        fits = scene_fits(m, h, w)  # the reference blended as inference writes it
        out.append(HeldScene(cube_name(path), m, scene, seen, score, held, fits))
    return out


class SharedScenes:
    """A split's :func:`held_scenes`, made on first use and shared by whoever judges the
    checkpoint on them: the gate and the calibration score the same val blocks under the
    same laid clouds and share each date's blended reference (``HeldScene.fields``), so the
    cubes are loaded and the references fitted once, not once each. ``release`` drops
    them (the calibration does, before its check loads the test split)."""

    def __init__(self, meta: dict, cube_paths: Sequence[str | Path], split: str, seed: int = 0):
        self.meta, self.cube_paths, self.split, self.seed = meta, tuple(cube_paths), split, seed
        self._scenes: list[HeldScene] | None = None
        self._made = False

    def get(self) -> list[HeldScene] | None:
        """The scenes (None when a cube is too large to hold: :func:`held_scenes`)."""
        if not self._made:
            self._scenes = held_scenes(self.meta, self.cube_paths, self.split, self.seed)
            self._made = True
        return self._scenes

    def release(self) -> None:
        """Let the scenes go; a later ``get`` makes them again."""
        self._scenes, self._made = None, False


def scene_predictions(gen: torch.nn.Module, hs: HeldScene, flips: int, seed: int = 0) -> Prediction:
    """``gen`` on a held scene through the inference predictor with ``flips``
    (``evaluate.protocol.predictor_method``): its ``Prediction`` (pred, and the uncertainty
    ``hs.meta`` states: the raw one without a calibration)."""
    from sar2opt.data.inputs import input_keys
    from sar2opt.evaluate.protocol import predictor_method
    from sar2opt.infer.predictor import TilePredictor, checkpoint_input_set

    keys = input_keys(checkpoint_input_set(hs.meta))
    predictor = TilePredictor.from_model(gen, hs.meta, flips=flips)
    return predictor_method(predictor, keys, fits=hs.fits, fields=hs.fields)(
        hs.seen, ~hs.held, seed
    )


def scene_gate(
    net: torch.nn.Module,
    reference: torch.nn.Module,
    scenes: Sequence[HeldScene] | None,
    flips: int = 1,
    seed: int = 0,
) -> dict[str, object] | None:
    """MAE (reflectance) of ``net`` and ``reference`` (the same generator with its net
    zeroed) over the val blocks of every cube (``scenes``: :func:`held_scenes`), each scene
    predicted whole through the inference predictor with ``flips``
    (:func:`scene_predictions`). None without scenes (a cube larger than
    ``GATE_SCENE_MAX_PX`` per date)."""
    if scenes is None:
        return None
    sums = {"net": 0.0, "reference": 0.0}
    n_px, per_cube = 0, {}
    for hs in scenes:
        cube = {}
        for name, gen in (("net", net), ("reference", reference)):
            err = np.abs(scene_predictions(gen, hs, flips, seed).pred - hs.scene.truth).mean(1)
            ok = hs.score & np.isfinite(err)
            cube[name] = float(err[ok].mean()) if ok.any() else float("nan")
            sums[name] += float(err[ok].sum())
        px = int(ok.sum())
        n_px += px
        per_cube[hs.name] = {**cube, "pixels": px}
    if not n_px:
        return {"net_mae": float("nan"), "reference_mae": float("nan"), "pixels": 0}
    return {
        "net_mae": sums["net"] / n_px,
        "reference_mae": sums["reference"] / n_px,
        "pixels": n_px,
        "judged_on": "val blocks through the inference predictor",
        "per_cube": per_cube,
    }


def gate_checkpoint(
    ckpt_dir: str | Path,
    batches: Iterable[Mapping[str, np.ndarray]],
    cube_paths: Sequence[str | Path] = (),
    flips: int = 1,
    seed: int = 0,
    scenes: SharedScenes | None = None,
) -> dict:
    """Score the checkpoint's net and its reference on the val blocks of ``cube_paths``
    through the inference predictor (``scene_gate``, clouds laid with ``seed``; ``scenes``
    when the caller holds them, to share with the calibration), or, for cubes too large to
    hold or none given, on ``batches`` (validation patches); zero the net when the reference
    does at least as well (:func:`net_to_reference` >= 1: with several cubes, each counts alike).
    Returns what was measured and kept (``{"net_mae", "reference_mae", "pixels", "ratio",
    "kept": "net" | "reference"}``), also stored in the metadata; ``{}`` for a
    model without a reference."""
    from sar2opt.train.checkpoint import load_generator, save_checkpoint

    gen, meta = load_generator(ckpt_dir)
    if not isinstance(gen, ReferenceGenerator):
        return {}
    got = None
    if cube_paths:
        ref = zero_output_copy(ckpt_dir)
        if scenes is None:
            scenes = SharedScenes(meta, cube_paths, "val", seed)
        got = scene_gate(gen, ref, scenes.get(), flips, seed)
    if got is None:
        got = net_vs_reference(gen, batches, meta.get("input_set", "S"), meta["norm"]["opt_std"])
        got["judged_on"] = "val patches"
    got["ratio"] = net_to_reference(got)
    if got["pixels"] == 0:
        got["kept"] = "net"  # nothing to judge on: leave the checkpoint as trained
    elif got["ratio"] >= 1.0:
        zero_output(gen.net)
        got["kept"] = "reference"
    else:
        got["kept"] = "net"
    save_checkpoint(ckpt_dir, gen, {**meta, GATE_KEY: got})
    return got


def net_to_reference(got: Mapping[str, object]) -> float:
    """The net's MAE over its reference's, the number the gate keeps the net by (< 1): with
    several cubes judged, the geometric mean of each cube's ratio, so that every scene
    counts alike. Pooled over pixels, the cube with most of them decides: on the three real
    sets a net 35 % worse than its reference on MultiEarth's val blocks (0.0070 vs 0.0052)
    was kept because BioMassters' pixels gained 1 %, and it scored 1.01 x the ridge on
    MultiEarth's test blocks where its reference scores 0.64 x."""
    per = [
        c["net"] / c["reference"]
        for c in (got.get("per_cube") or {}).values()
        if c.get("pixels") and c["reference"] > 0 and np.isfinite(c["net"])
    ]
    if len(per) > 1:
        return float(np.exp(np.mean(np.log(per))))
    if not got.get("pixels"):
        return float("nan")
    net, ref = float(got["net_mae"]), float(got["reference_mae"])
    return net / ref if ref > 0 else (1.0 if net <= 0 else float("inf"))


def zero_output_copy(ckpt_dir: str | Path) -> ReferenceGenerator:
    """The checkpoint's generator with its net's output zeroed: the reference alone."""
    from sar2opt.train.checkpoint import load_generator

    ref, _ = load_generator(ckpt_dir)
    zero_output(ref.net)
    return ref


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
    on = got.get("judged_on", "val patches")
    per = "".join(
        f"; {name} {c['net']:.4f} vs {c['reference']:.4f}"
        for name, c in (got.get("per_cube") or {}).items()
    )
    ratio = f"; net / reference {got['ratio']:.3f} (each cube alike)" if per else ""
    return (
        f"=== net vs its reference on the {on} ({int(got['pixels'])} scored px): "
        f"net MAE {got['net_mae']:.4f}, reference alone {got['reference_mae']:.4f}{per}{ratio}: "
        f"{kept}"
    )
