"""Driver side of training: cube -> patches -> Ray datasets -> TorchTrainer -> checkpoint.

Normalisation statistics come from the training split only. After training, the copied
checkpoint is scored on every validation patch next to the baseline of predicting the
constant train-mean colour, so the model's number never stands alone.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import ray
import ray.data
import torch
import xarray as xr
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from sar2opt.config import Config, config_to_dict
from sar2opt.data.inputs import model_input, uses_dem, uses_prior
from sar2opt.data.normalise import band_stats, denormalise, normalise
from sar2opt.data.patches import DEM_BAND, PRIOR_PREFIX, PatchError, extract_patches
from sar2opt.errors import Sar2OptError
from sar2opt.provenance import git_sha
from sar2opt.train.checkpoint import load_generator
from sar2opt.train.loop import train_loop_per_worker

METRIC_COLUMNS = (
    "epoch", "d_loss", "g_adv", "g_fm", "g_rec", "g_l1", "g_total", "val_l1", "val_mae_refl",
    "samples_per_s", "epoch_s",
)  # fmt: skip


class TrainError(Sar2OptError):
    """Training cannot start (unreadable cube) or did not produce a checkpoint."""


def _open_cube(cube_path: str | Path) -> tuple[xr.DataArray, list[str], list[str], dict]:
    try:
        ds = xr.open_zarr(str(cube_path))
    except (FileNotFoundError, OSError, ValueError, KeyError) as e:
        raise TrainError(f"cannot open cube {cube_path}: {e}") from None
    if "cube" not in ds or "sar_bands" not in ds.attrs or "opt_bands" not in ds.attrs:
        raise TrainError(f"{cube_path} lacks variable 'cube' or attrs sar_bands/opt_bands")
    return ds["cube"], list(ds.attrs["sar_bands"]), list(ds.attrs["opt_bands"]), dict(ds.attrs)


def aux_bands(attrs: dict, opt_bands: list[str], input_set: str) -> dict[str, list[str]]:
    """Cube bands of the input set's extra inputs, from the cube attrs or the default names."""
    out: dict[str, list[str]] = {}
    if uses_prior(input_set):
        out["prior"] = list(attrs.get("prior_bands") or [PRIOR_PREFIX + b for b in opt_bands])
    if uses_dem(input_set):
        out["dem"] = [str(attrs.get("dem_band") or DEM_BAND)]
    return out


def masked_mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-band MAE over pixels with mask > 0; pred/target (N, C, H, W), mask (N, 1, H, W)."""
    m = np.broadcast_to(mask > 0, target.shape)
    err = np.where(m, np.abs(pred - target), 0.0)
    return err.sum(axis=(0, 2, 3)) / np.maximum(m.sum(axis=(0, 2, 3)), 1)


def predict(gen: torch.nn.Module, sar: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Generator output for normalised model inputs (N, C, P, P), on CPU, in eval mode."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(sar), batch_size):
            outs.append(gen(torch.from_numpy(sar[i : i + batch_size])).numpy())
    return np.concatenate(outs)


def _rows(items: dict[str, np.ndarray], idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{k: np.ascontiguousarray(v[i]) for k, v in items.items()} for i in idx]


def train_model(cube_path: str | Path, out_dir: str | Path, cfg: Config) -> Path:
    """Train on the cube; return ``out_dir/checkpoint``, a copy of the last epoch's checkpoint.

    Also writes ``out_dir/metrics.csv`` (one row per epoch) and ``out_dir/val_scores.json``
    (model vs. train-mean baseline MAE in reflectance on the validation patches). Expects
    Ray to be initialised by the caller (or lets TorchTrainer start a local instance).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cube, sar_bands, opt_bands, attrs = _open_cube(cube_path)
    input_set = cfg.model.input_set
    aux = aux_bands(attrs, opt_bands, input_set)
    p = extract_patches(
        cube, sar_bands, opt_bands, cfg.patches, input_set,
        dem_band=aux.get("dem", [DEM_BAND])[0], prior_bands=aux.get("prior"),
    )  # fmt: skip
    is_train = p["split"] == "train"
    tr_idx, va_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    nw = cfg.train.num_workers
    if len(va_idx) == 0:
        raise PatchError(
            "no validation patches: the eastern strip (patches.val_frac="
            f"{cfg.patches.val_frac}) is too cloudy or too narrow"
        )
    if len(tr_idx) < nw:
        raise PatchError(f"{len(tr_idx)} training patches cannot feed {nw} workers")
    # Per-worker batch: a worker whose shard is smaller than one batch would train on nothing.
    batch_size = max(1, min(cfg.train.batch_size, len(tr_idx) // nw))

    sar_mean, sar_std = band_stats(p["sar"][tr_idx])
    opt_mean, opt_std = band_stats(p["opt"][tr_idx], p["mask"][tr_idx])
    norm = {
        "sar_mean": sar_mean.tolist(), "sar_std": sar_std.tolist(),
        "opt_mean": opt_mean.tolist(), "opt_std": opt_std.tolist(),
    }  # fmt: skip
    items = {
        "sar": normalise(p["sar"], sar_mean, sar_std).astype(np.float32),
        # Non-clear optical pixels -> 0 (the mean colour): out of the loss, neutral for D.
        "opt": np.where(p["mask"] > 0, normalise(p["opt"], opt_mean, opt_std), 0.0).astype(
            np.float32
        ),
        "mask": p["mask"],
    }
    if "prior" in p:  # the prior is optical reflectance: the target's statistics fit it
        items["prior"] = normalise(p["prior"], opt_mean, opt_std).astype(np.float32)
    if "dem" in p:
        dem_mean, dem_std = band_stats(p["dem"][tr_idx])
        norm["dem_mean"], norm["dem_std"] = dem_mean.tolist(), dem_std.tolist()
        items["dem"] = normalise(p["dem"], dem_mean, dem_std).astype(np.float32)
    print(
        f"patches: {len(tr_idx)} train, {len(va_idx)} val ({cfg.patches.patch_px} px), "
        f"{nw} workers x batch {batch_size}",
        flush=True,
    )

    full_cfg = config_to_dict(cfg)
    loop_config = {
        "model": config_to_dict(cfg.model),
        "train": config_to_dict(cfg.train),
        "in_bands": sar_bands,
        "out_bands": opt_bands,
        "norm": norm,
        "aux_bands": aux,
        "config": full_cfg,
        "git_sha": git_sha(),
        "batch_size": batch_size,
    }
    datasets = {
        "train": ray.data.from_items(_rows(items, tr_idx)),
        "val": ray.data.from_items(_rows(items, va_idx)),
    }
    run_dir = out_dir / "ray_results" / "train"
    if run_dir.exists():
        # Ray Train V2 would restore the old run's checkpoint bookkeeping from here.
        shutil.rmtree(run_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=nw,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.train.use_gpu else {})},
        ),
        datasets=datasets,
        run_config=RunConfig(
            storage_path=str(out_dir / "ray_results"),
            name="train",
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TrainError("training finished without a checkpoint")

    ckpt_dir = out_dir / "checkpoint"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    result.checkpoint.to_directory(str(ckpt_dir))

    history = result.return_value or []
    if not history and result.metrics_dataframe is not None:
        history = result.metrics_dataframe.to_dict("records")
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(history)

    # Score the saved checkpoint itself (what inference will load) on every val patch.
    gen, meta = load_generator(ckpt_dir)
    x_va = model_input({k: v[va_idx] for k, v in items.items()}, input_set).numpy()
    pred = denormalise(predict(gen, x_va), opt_mean, opt_std)
    opt_va, mask_va = p["opt"][va_idx], p["mask"][va_idx]
    model_mae = masked_mae(pred, opt_va, mask_va)
    baseline = np.broadcast_to(opt_mean.reshape(1, -1, 1, 1), opt_va.shape)
    base_mae = masked_mae(baseline, opt_va, mask_va)
    scores = {
        "n_val_patches": int(len(va_idx)),
        "epoch": meta["epoch"],
        "model_mae": float(model_mae.mean()),
        "baseline_train_mean_mae": float(base_mae.mean()),
        "per_band": {
            b: {"model_mae": float(m), "baseline_mae": float(bm)}
            for b, m, bm in zip(opt_bands, model_mae, base_mae, strict=True)
        },
    }
    (out_dir / "val_scores.json").write_text(json.dumps(scores, indent=2))
    print(
        f"validation MAE (reflectance, {len(va_idx)} patches): model {scores['model_mae']:.4f}  "
        f"vs baseline train-mean colour {scores['baseline_train_mean_mae']:.4f}",
        flush=True,
    )
    return ckpt_dir
