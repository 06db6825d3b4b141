"""After training: fit the best checkpoint's uncertainty calibration on the validation split.

The predictor's ``spread`` (std of its test-time-flip hypotheses) ranks errors but is not in
their units, and it does not see a scene fit's own error; its ``raw_uncertainty`` combines
the two. Here the checkpoint runs as inference runs it (``TilePredictor``, the same flips)
on the validation split, and the raw uncertainty and |error| of the pixels it synthesised
are fitted into knots (``infer.calibration.fit_calibration``), one set per hypothesis count
inference may use, stored in the checkpoint's metadata (``uncertainty_calibration``). For a
scene-fit model whose training cubes are small enough to hold (``reference_gate.
held_scenes``), the split is each cube's val blocks predicted whole, under real cloud masks
laid on clear dates, the fit blended as inference writes it (what inference states is what
is fitted); otherwise the val patches, a scene fit taken over the window inference would
give each one.
The held-out test split, taken the same way, then shows per decile of the calibrated
uncertainty the mean |error| beside it (``test_scores.json``): blocks the fit never saw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sar2opt.config import MAX_TTA_FLIPS
from sar2opt.data.inputs import REF_ERR_KEY, REF_KEY, model_input, uses_cloudy
from sar2opt.data.normalise import denormalise
from sar2opt.data.stream import read_patches
from sar2opt.infer.calibration import (
    CALIBRATION_KEY,
    STATED_INPUT,
    apply_calibration,
    decile_table,
    fit_calibration,
)

if TYPE_CHECKING:
    from sar2opt.train.reference_gate import SharedScenes

#: Patches of a split the calibration reads at most (drawn with the run's seed), and pixels
#: kept per patch (drawn too): bounded time and memory whatever the split's size.
CALIBRATION_MAX_PATCHES = 256
CALIBRATION_PX_PER_PATCH = 2048
CHUNK = 32  # patches per forward batch
#: Hypothesis counts a calibration is fitted for (one flip has no spread).
CALIBRATED_FLIPS: tuple[int, ...] = tuple(range(2, MAX_TTA_FLIPS + 1))


def spread_and_error(
    gen,
    meta: dict,
    cube_path: str,
    rows: pd.DataFrame,
    read_kw: dict,
    flips: Sequence[int],
    seed: int = 0,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per flip count, the predictor's ``raw_uncertainty`` and the band-mean |error| of its
    ``pred`` (reflectance) on the clear pixels of ``rows``' patches (a seeded sample of
    them); each patch's context reference where ``read_kw`` has a ``reference_context``.

    A cloud-removal model (SC, SCO, SCOD) is scored only where its same-date S2 was masked
    (the laid clouds of ``read_kw``'s ``cloud_masks``): where it saw the pixel it all but
    copies it, and inference shows the real S2 there anyway (uncertainty 0)."""
    from sar2opt.infer.predictor import TilePredictor

    rng = np.random.default_rng(seed)
    ctx = read_kw.get("reference_context")
    if ctx is not None:  # the context reference's error too, over that same context
        read_kw = {**read_kw, "reference_context": dataclasses.replace(ctx, with_error=True)}
    if len(rows) > CALIBRATION_MAX_PATCHES:
        rows = rows.iloc[np.sort(rng.permutation(len(rows))[:CALIBRATION_MAX_PATCHES])]
    input_set = meta.get("input_set", "S")
    plain = {k: v for k, v in meta.items() if k != CALIBRATION_KEY}  # the raw spread
    predictors = {k: TilePredictor.from_model(gen, plain, flips=k) for k in flips}
    om, os_ = np.asarray(meta["norm"]["opt_mean"]), np.asarray(meta["norm"]["opt_std"])
    got: dict[int, tuple[list, list]] = {k: ([], []) for k in flips}
    for i in range(0, len(rows), CHUNK):
        t = read_patches(cube_path, rows.iloc[i : i + CHUNK], **read_kw)
        x = model_input(t, input_set).numpy()
        truth = denormalise(t["opt"], om, os_)
        clear = t["mask"][:, 0] > 0
        if uses_cloudy(input_set):  # the pixels it synthesised: its same-date S2 masked them
            clear &= np.asarray(t["cloudy"])[:, -1] > 0.5
        pick = [_sample(np.flatnonzero(c), rng) for c in clear.reshape(len(clear), -1)]
        for k, predictor in predictors.items():
            out = predictor.predict_normalised(x, ref=t.get(REF_KEY), ref_err=t.get(REF_ERR_KEY))
            err = np.abs(out["pred"] - truth).mean(axis=1)
            for j, px in enumerate(pick):
                got[k][0].append(out["raw_uncertainty"][j].reshape(-1)[px])
                got[k][1].append(err[j].reshape(-1)[px])
    return {k: (np.concatenate(s or [[]]), np.concatenate(e or [[]])) for k, (s, e) in got.items()}


def _sample(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if px.size <= CALIBRATION_PX_PER_PATCH:
        return px
    return np.sort(rng.choice(px, CALIBRATION_PX_PER_PATCH, replace=False))


def scene_spread_and_error(
    gen, meta: dict, scenes: Sequence, flips: Sequence[int], seed: int = 0
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per flip count, the predictor's ``raw_uncertainty`` and the band-mean |error| of its
    ``pred`` (reflectance) on the scored pixels of held scenes (``reference_gate.
    held_scenes``): each cube's split blocks predicted whole through the inference
    predictor, a cloud-removal model under real cloud masks laid on clear dates, a scene-fit
    reference blended as inference writes it. What inference states is what is fitted."""
    from sar2opt.train.reference_gate import scene_predictions

    got: dict[int, tuple[list, list]] = {k: ([], []) for k in flips}
    for hs in scenes:
        plain = {k: v for k, v in hs.meta.items() if k != CALIBRATION_KEY}  # the raw one
        hs = dataclasses.replace(hs, meta=plain)
        for k in flips:
            out = scene_predictions(gen, hs, k, seed)
            if out.uncertainty is None:
                continue
            err = np.abs(out.pred - hs.scene.truth).mean(axis=1)
            ok = hs.score & np.isfinite(err) & np.isfinite(out.uncertainty)
            got[k][0].append(out.uncertainty[ok])
            got[k][1].append(err[ok])
    return {k: (np.concatenate(s or [[]]), np.concatenate(e or [[]])) for k, (s, e) in got.items()}


def calibrate_checkpoint(
    ckpt_dir: str | Path,
    cube_path: str,
    index: pd.DataFrame,
    read_kw: dict,
    *,
    seed: int = 0,
    check_flips: int = 2,
    cube_paths: Sequence[str | Path] = (),
    val_scenes: SharedScenes | None = None,
) -> dict:
    """Fit the checkpoint's calibration on the ``val`` split and store it in its metadata;
    return the reliability of the calibrated ``uncertainty`` with ``check_flips``
    hypotheses on the held-out ``test`` split (the validation split when there is none):
    ``{"split", "flips", "on"`` (what it was fitted on), ``"checked_on", "deciles":
    calibration.decile_table rows}``, and with several cubes held whole each one's deciles
    (``per_cube``).

    For a scene-fit model with ``cube_paths`` small enough to hold whole
    (``reference_gate.held_scenes``), both on each cube's blocks of the split predicted
    whole through the inference predictor (:func:`scene_spread_and_error`), as inference
    and ``jobs/evaluate.py`` meet them: its stated uncertainty is mostly the fit's error,
    which depends on the windows fitted and on where the clouds lie; on the val patches a
    hidden pixel's reference is fitted over a context window and its laid cloud is a
    patch's, and the map they gave stated the real test blocks' errors 0.6-0.7 x too small
    where BioMassters' fits err 0.015-0.045. Otherwise on the patches
    (:func:`spread_and_error`): a spread alone transfers from patches (the synthetic demo's
    test deciles 0.94-1.06; 0.75-0.98 fitted on its whole val blocks). ``val_scenes``:
    the val scenes the gate held (``reference_gate.SharedScenes``), released once fitted."""
    from sar2opt.train.checkpoint import load_generator, update_meta
    from sar2opt.train.reference_gate import SharedScenes, held_scenes

    gen, meta = load_generator(ckpt_dir)
    scenes = None
    if cube_paths and getattr(gen, "kind", None) == "scene_fit":
        if val_scenes is None:
            val_scenes = SharedScenes(meta, cube_paths, "val", seed)
        scenes = val_scenes.get()
    whole = bool(scenes)  # not when too large to hold, or no cube has val blocks to score
    if whole:
        fitted = scene_spread_and_error(gen, meta, scenes, CALIBRATED_FLIPS, seed)
        on = "blocks through the inference predictor"
    else:
        val = index[index["split"] == "val"]
        fitted = spread_and_error(gen, meta, cube_path, val, read_kw, CALIBRATED_FLIPS, seed)
        on = "patches"
    fits = []
    for k, (s, e) in fitted.items():
        if np.isfinite(s).any():
            fits.append(
                {"flips": k, "input": STATED_INPUT, "fitted_on": on, **fit_calibration(s, e)}
            )
    del scenes  # the test split's scenes come next: one split's in memory at a time
    if val_scenes is not None:
        val_scenes.release()
    meta = update_meta(ckpt_dir, **{CALIBRATION_KEY: fits})
    split = "test" if (index["split"] == "test").any() else "val"
    held = held_scenes(meta, cube_paths, split, seed + 1) if whole else None
    knots = next((f for f in fits if f["flips"] == check_flips), None)
    per_cube = {}
    if held:  # each cube's deciles too: one map serves every scene, and may suit some less
        got = {
            hs.name: scene_spread_and_error(gen, meta, [hs], (check_flips,), seed + 1)[check_flips]
            for hs in held
        }
        s, e = (np.concatenate(v) for v in zip(*got.values(), strict=True))
        per_cube = {
            name: decile_table(cs if knots is None else apply_calibration(cs, knots), ce)
            for name, (cs, ce) in got.items()
            if cs.size
        }
        checked_on = on
    else:  # no cube's split can be held whole (or laid with clouds): its patches
        rows = index[index["split"] == split]
        s, e = spread_and_error(gen, meta, cube_path, rows, read_kw, (check_flips,), seed + 1)[
            check_flips
        ]
        checked_on = "patches"
    stated = s if knots is None else apply_calibration(s, knots)
    out = {
        "split": split,
        "flips": check_flips,
        "on": on,
        "checked_on": checked_on,
        "calibrated": knots is not None,
        "deciles": decile_table(stated, e),
        "deciles_raw_spread": decile_table(s, e),
    }
    return out | ({"per_cube": per_cube} if len(per_cube) > 1 else {})
