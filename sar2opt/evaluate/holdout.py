"""A trained checkpoint scored on held-out patches beside the two baselines.

The training job scores the best checkpoint on the test split of its patch index (the
validation split when there is none): the model next to the constant train-mean colour and,
for VV/VH models, the per-pixel ridge on SAR features (``baselines.fit_sar_ridge``) fitted
on training patches; so the model's number never stands alone. Patches are read and scored
chunk by chunk, with additive sums, so memory stays flat however large the split is.

Which pixels a checkpoint never trained on: the training job records every cube it trained
on (``cube_record``: the cube's identity, patch layout and the block ids of each split), so
``held_out_pixels`` gives ``jobs/evaluate.py`` the test blocks of exactly the cube it scores,
whichever of several training cubes that is; a cube the checkpoint never saw is held out
everywhere, and says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sar2opt.data.inputs import model_input
from sar2opt.data.normalise import denormalise
from sar2opt.data.stream import read_patches
from sar2opt.evaluate.baselines import fit_sar_ridge
from sar2opt.evaluate.metrics import ssim_map

#: The corner of one band read into a cube's identity (with its grid, shape and dates), so
#: two cubes of the same grid and dates but other pixels differ.
ID_WINDOW_PX = 64
SCORE_CHUNK = 64  # test patches read and scored at a time
RIDGE_MAX_PATCHES = 64  # training patches the ridge baseline is fitted on (pixels add up)
MODEL, MEAN_COLOUR, RIDGE = "model", "baseline: train mean colour", "baseline: ridge on SAR"


def predict_patches(gen: torch.nn.Module, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Generator output for normalised model inputs (N, C, P, P), on CPU, in eval mode."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(gen(torch.from_numpy(x[i : i + batch_size])).numpy())
    return np.concatenate(outs)


def patch_sums(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Additive error sums of reflectance patches on clear pixels (see :func:`sums_to_scores`).

    ``pred``/``truth`` (N, C, P, P), ``mask`` (N, 1, P, P). ``abs_err``/``sq_err`` sum over
    clear pixels x bands (``n_px`` of them, ``n_clear`` pixels); ``ssim_sum``/``ssim_n`` over
    each patch's fully clear SSIM windows (``metrics.ssim_map``), so no window straddles two
    patches. Sums add over chunks: the split is scored chunk by chunk.
    """
    m = mask[:, 0] > 0
    err = np.moveaxis(np.asarray(pred, "float64") - truth, 1, 0)[:, m]
    maps = [ssim_map(pred[i], truth[i], m[i]) for i in range(len(pred))]
    return {
        "abs_err": float(np.abs(err).sum()),
        "sq_err": float((err**2).sum()),
        "n_px": float(err.size),
        "n_clear": float(m.sum()),
        "ssim_sum": float(sum(np.nansum(s) for s in maps)),
        "ssim_n": float(sum(np.isfinite(s).sum() for s in maps)),
    }


def sums_to_scores(s: dict[str, float]) -> dict:
    """MAE, RMSE, PSNR (dB, data range 1: reflectance) and SSIM from :func:`patch_sums`."""
    mse = s["sq_err"] / s["n_px"]
    return {
        "mae": s["abs_err"] / s["n_px"],
        "rmse": float(np.sqrt(mse)),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
        "ssim": s["ssim_sum"] / s["ssim_n"] if s["ssim_n"] else float("nan"),
        "pixels": int(s["n_clear"]),
    }


def score_checkpoint(
    gen: torch.nn.Module,
    meta: dict,
    cube_path: str,
    index: pd.DataFrame,
    read_kw: dict,
    *,
    index_hash: str,
    seed: int = 0,
) -> dict:
    """A checkpoint's generator (``train.checkpoint.load_generator``) vs. the baselines on
    the held-out patches of ``index`` (sar2opt.data.index columns).

    Reads the test split (the validation split if the index has no test patches) chunk by
    chunk with ``read_patches(cube_path, rows, **read_kw)``. Baselines: the constant
    train-mean colour and, for VV/VH models, a ridge fit on up to RIDGE_MAX_PATCHES training
    patches drawn with ``seed``.
    """
    input_set = meta.get("input_set", "S")
    norm = meta["norm"]
    om, os_ = np.asarray(norm["opt_mean"]), np.asarray(norm["opt_std"])
    sm, ss = np.asarray(norm["sar_mean"]), np.asarray(norm["sar_std"])
    split = "test" if (index["split"] == "test").any() else "val"
    rows = index[index["split"] == split]
    ridge = None
    if len(meta["in_bands"]) == 2:
        train = index[index["split"] == "train"]
        rng = np.random.default_rng(seed)
        fit_rows = train.iloc[np.sort(rng.permutation(len(train))[:RIDGE_MAX_PATCHES])]
        f = read_patches(cube_path, fit_rows, **read_kw)
        ridge = fit_sar_ridge(
            denormalise(f["sar"], sm, ss), denormalise(f["opt"], om, os_), f["mask"][:, 0] > 0,
        )  # fmt: skip
    names = [MODEL, MEAN_COLOUR] + ([RIDGE] if ridge else [])
    sums: dict[str, dict[str, float]] = {n: {} for n in names}
    per_band = np.zeros((2, len(om)))
    for i in range(0, len(rows), SCORE_CHUNK):
        t = read_patches(cube_path, rows.iloc[i : i + SCORE_CHUNK], **read_kw)
        mask = t["mask"]
        truth = denormalise(t["opt"], om, os_)
        preds = {
            MODEL: denormalise(predict_patches(gen, model_input(t, input_set).numpy()), om, os_),
            MEAN_COLOUR: np.broadcast_to(om.reshape(1, -1, 1, 1), truth.shape).astype(np.float32),
        }
        if ridge is not None:
            preds[RIDGE] = ridge.predict(denormalise(t["sar"], sm, ss))
        for n, pr in preds.items():
            for k, v in patch_sums(pr, truth, mask).items():
                sums[n][k] = sums[n].get(k, 0.0) + v
        m = np.broadcast_to(mask > 0, truth.shape)
        per_band += [
            np.where(m, np.abs(preds[MODEL] - truth), 0).sum((0, 2, 3)),
            m.sum((0, 2, 3)),
        ]
    return {
        "split": split,
        "n_patches": int(len(rows)),
        "epoch": meta["epoch"],
        "index_hash": index_hash,
        "rows": {n: sums_to_scores(s) for n, s in sums.items()},
        "model_mae_per_band": dict(
            zip(meta["out_bands"], (per_band[0] / np.maximum(per_band[1], 1)).tolist(), strict=True)
        ),
    }


def format_scores(scores: dict) -> str:
    """The side-by-side table the training job prints."""
    lines = [
        f"=== {scores['split']} split, {scores['n_patches']} patches, best epoch "
        f"{scores['epoch']}, reflectance units",
        f"{'':30s} {'MAE':>8s} {'RMSE':>8s} {'PSNR dB':>8s} {'SSIM':>6s} {'pixels':>9s}",
    ]
    for name, r in scores["rows"].items():
        lines.append(
            f"{name:30s} {r['mae']:8.4f} {r['rmse']:8.4f} {r['psnr_db']:8.2f} {r['ssim']:6.3f} "
            f"{r['pixels']:9d}"
        )
    return "\n".join(lines)


# --- which pixels a checkpoint never trained on ------------------------------------------


def cube_identity(cube_path: str | Path) -> str:
    """A content id of a cube store (16 hex): its grid, (time, y, x) shape, dates, bands and
    the first date's first band over a ``ID_WINDOW_PX`` corner. The same cube moved or
    rebuilt alike keeps it; another cube on the same grid and dates does not."""
    import zarr

    group = zarr.open_group(str(cube_path), mode="r")
    arr = group["cube"]
    attrs = dict(group.attrs)
    head = {
        "grid": attrs.get("grid"),
        "shape": [int(arr.shape[0]), int(arr.shape[2]), int(arr.shape[3])],
        "time": [str(v) for v in np.asarray(group["time"][...]).ravel()] if "time" in group else [],
        "band": [str(b) for b in group["band"][...]],
    }
    corner = np.asarray(arr[0, 0, :ID_WINDOW_PX, :ID_WINDOW_PX], dtype=np.float32)
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(corner).tobytes())
    return h.hexdigest()[:16]


def cube_record(cube_path: str | Path, shape: tuple[int, int, int], spec, attrs: dict) -> dict:
    """What a checkpoint keeps of one training cube: ``id`` (:func:`cube_identity`),
    ``path``, ``shape`` (time, y, x), ``grid``, ``patches`` (the resolved ``PatchSpec``),
    ``blocks`` (block ids of the val and test splits) and ``cube_spec`` (its build rule)."""
    from sar2opt.data.index import split_blocks

    blocks = split_blocks(int(shape[1]), int(shape[2]), spec)
    return {
        "id": cube_identity(cube_path),
        "path": str(Path(cube_path).resolve()),
        "shape": [int(v) for v in shape],
        "grid": attrs.get("grid"),
        "patches": asdict(spec),
        "blocks": {s: blocks[s] for s in ("val", "test")},
        "cube_spec": dict(attrs.get("cube_spec") or {}),
    }


def trained_record(meta: dict, cube_path: str | Path) -> dict | None:
    """The checkpoint's record of this cube (matched by :func:`cube_identity`), or None:
    never trained on it, or a checkpoint older than the records."""
    recs = meta.get("cubes") or []
    if not recs:
        return None
    cid = cube_identity(cube_path)
    return next((r for r in recs if r.get("id") == cid), None)


def meta_for_cube(meta: dict, cube_path: str | Path) -> dict:
    """``meta`` with ``cube_spec`` of the training cube ``cube_path`` is (a checkpoint
    trained on several cubes made by different rules reads each cube by its own rule)."""
    rec = trained_record(meta, cube_path)
    if rec is None or not rec.get("cube_spec"):
        return meta
    return {**meta, "cube_spec": rec["cube_spec"]}


@dataclass(frozen=True)
class HeldOut:
    """The pixels of a cube a checkpoint never trained on, and why."""

    pixels: np.ndarray  # (height, width) bool
    split: str  # "test" / "val": the checkpoint's split there; "all": not trained here
    trained_here: bool
    note: str


def held_out_pixels(
    meta: dict, cube_path: str | Path, height: int, width: int, split: str = "test"
) -> HeldOut | None:
    """The ``split`` blocks (val when the cube had no test block) of the checkpoint's
    record of ``cube_path``; every pixel ("not trained here") when the checkpoint records
    its training cubes and this is none of them; None for a checkpoint without records
    (rebuild its split from its config, as before)."""
    from sar2opt.data.index import block_pixels

    recs = meta.get("cubes") or []
    if not recs:
        return None
    rec = trained_record(meta, cube_path)
    if rec is None:
        names = ", ".join(Path(r.get("path", "?")).parent.name or "?" for r in recs)
        return HeldOut(
            np.ones((height, width), dtype=bool), "all", False,
            f"not trained here: the checkpoint trained on {len(recs)} other cube(s) ({names}), "
            "so every block of this one counts as test",
        )  # fmt: skip
    if list(rec["shape"][1:]) != [height, width]:
        raise ValueError(f"the cube is {height}x{width} px, the checkpoint's record {rec['shape']}")
    if not rec["blocks"].get(split):
        split = "val"
    pixels = block_pixels(height, width, int(rec["patches"]["block_px"]), rec["blocks"][split])
    p = rec["patches"]
    return HeldOut(
        pixels, split, True,
        f"trained here: scored only inside the checkpoint's {len(rec['blocks'][split])} "
        f"{split} block(s) of this cube ({int(pixels.sum())} px; block_px {p['block_px']}, "
        f"split_seed {p['split_seed']}), which it never trained on",
    )  # fmt: skip
