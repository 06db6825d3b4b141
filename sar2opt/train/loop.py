"""The Ray Train worker loop: data shards -> augmentation -> gan_step -> validation -> report.

Runs on every worker of a ``TorchTrainer``. G and D are wrapped in DDP by
``prepare_model``; per-epoch losses are all-reduced so rank 0 reports global numbers. Rank 0
alone writes the checkpoint; every worker calls ``ray.train.report`` (it is a barrier).
"""

from __future__ import annotations

import logging
import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sar2opt.config import ModelSpec
from sar2opt.data.inputs import input_channels, input_keys
from sar2opt.models import build_discriminator, build_generator
from sar2opt.train.checkpoint import save_checkpoint, unwrap
from sar2opt.train.step import LOSS_KEYS, LossSpec, eval_step, gan_step

KEYS = ("sar", "opt", "mask")


def batch_keys(input_set: str) -> tuple[str, ...]:
    """Keys a training batch carries: the targets plus the input set's extra inputs."""
    return (*KEYS, *[k for k in input_keys(input_set) if k not in KEYS])


# Ray Train V2 patches print() in workers and, because Ray has already redirected stdout,
# tees it: every print reaches the driver twice. Its root logger forwards once.
log = logging.getLogger(__name__)


def augment(batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random rot90 and horizontal flip per sample, identical for every key of the batch.

    The 8 dihedral transforms multiply a few hundred patches without new data; the cube has
    no preferred orientation at patch scale (speckle and fields look alike rotated).
    """
    n = batch["sar"].shape[0]
    ks = rng.integers(0, 4, n)
    flips = rng.integers(0, 2, n).astype(bool)
    out = {}
    for key in batch:
        x = batch[key]
        parts = []
        for i in range(n):
            xi = torch.rot90(x[i], int(ks[i]), dims=(-2, -1))
            parts.append(torch.flip(xi, dims=(-1,)) if flips[i] else xi)
        out[key] = torch.stack(parts)
    return out


def _allreduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over all workers (identity for a single worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    names = sorted(values)
    t = torch.tensor([values[k] for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(names, t.tolist(), strict=True))


def train_loop_per_worker(config: dict) -> list[dict]:
    """Train G and D for ``config["train"]["epochs"]`` epochs; rank 0 returns the history.

    ``config`` (plain types): ``model`` and ``train`` (spec dicts), ``in_bands``,
    ``out_bands``, ``norm`` ({sar,opt,dem}_{mean,std} lists), ``aux_bands`` (cube bands of
    the extra inputs: {"prior": [...], "dem": [...]}), ``config`` (full resolved config),
    ``git_sha``, ``batch_size`` (per worker).
    """
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tr = config["train"]
    spec = ModelSpec(**config["model"])
    cs, co = len(config["in_bands"]), len(config["out_bands"])
    keys = batch_keys(spec.input_set)
    in_ch, dem_ch = input_channels(spec.input_set, cs, co)
    losses = LossSpec.from_train(tr)
    device = ray.train.torch.get_device()
    use_amp = device.type == "cuda"

    torch.manual_seed(tr["seed"])  # same init everywhere; DDP also broadcasts rank 0's weights
    rng = np.random.default_rng([tr["seed"], rank])
    gen = ray.train.torch.prepare_model(build_generator(spec, in_ch, co, dem_ch))
    disc = build_discriminator(spec, in_ch + co)  # None: non-adversarial model
    opt_d = None
    if disc is not None:
        disc = ray.train.torch.prepare_model(disc)
        opt_d = torch.optim.Adam(disc.parameters(), lr=tr["lr"], betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), lr=tr["lr"], betas=(0.5, 0.999))
    step = 0

    norm = config["norm"]
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    bs = int(config["batch_size"])
    history: list[dict] = []

    for epoch in range(1, tr["epochs"] + 1):
        t0 = time.perf_counter()
        sums = {**dict.fromkeys(LOSS_KEYS, 0.0), "n": 0.0}
        # drop_last: every worker holds the same row count (equal split), so the same number
        # of batches -> DDP collectives stay in step; and no batch of 1 for BatchNorm.
        for batch in train_shard.iter_torch_batches(
            batch_size=bs,
            dtypes=torch.float32,
            device=device,
            drop_last=True,
            local_shuffle_buffer_size=4 * bs,
            local_shuffle_seed=int(rng.integers(2**31)),
        ):
            batch = augment({k: batch[k] for k in keys}, rng)
            out = gan_step(
                gen, disc, opt_g, opt_d, batch, amp=use_amp, step=step, losses=losses,
                input_set=spec.input_set,
            )  # fmt: skip
            step += 1
            n = batch["sar"].shape[0]
            for k, v in out.items():
                sums[k] += v * n
            sums["n"] += n
        train_s = time.perf_counter() - t0

        vsums = {"l1": 0.0, "mae_refl": 0.0, "n_px": 0.0}
        bare = unwrap(gen)  # no DDP wrapper: evaluation needs no collectives
        for batch in val_shard.iter_torch_batches(
            batch_size=bs, dtypes=torch.float32, device=device
        ):
            ev = eval_step(
                bare, {k: batch[k] for k in keys}, norm["opt_mean"], norm["opt_std"],
                input_set=spec.input_set,
            )  # fmt: skip
            for k in ("l1", "mae_refl"):
                vsums[k] += ev[k] * ev["n_px"]
            vsums["n_px"] += ev["n_px"]

        g = _allreduce_sums({**sums, **{f"val_{k}": v for k, v in vsums.items()}}, device)
        n, npx = max(g["n"], 1.0), max(g["val_n_px"], 1.0)
        metrics = {
            "epoch": epoch,
            **{k: g[k] / n for k in LOSS_KEYS},
            "val_l1": g["val_l1"] / npx,
            "val_mae_refl": g["val_mae_refl"] / npx,
            "samples_per_s": g["n"] / max(train_s, 1e-9),
            "epoch_s": time.perf_counter() - t0,
            "world_size": world,
        }
        history.append(metrics)
        if rank == 0:
            log.info(
                "epoch %d/%d  g_l1 %.4f  d_loss %.4f  val_l1 %.4f  val_mae %.4f  %.1f samples/s",
                epoch, tr["epochs"], metrics["g_l1"], metrics["d_loss"], metrics["val_l1"],
                metrics["val_mae_refl"], metrics["samples_per_s"],
            )  # fmt: skip
            meta = {
                "model": config["model"],
                "in_bands": config["in_bands"],
                "out_bands": config["out_bands"],
                "norm": norm,
                "input_set": spec.input_set,
                "aux_bands": config.get("aux_bands", {}),
                "config": config["config"],
                "git_sha": config["git_sha"],
                "epoch": epoch,
                "batch_size_per_worker": bs,
                "metrics": metrics,
            }
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(d, gen, meta)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
    return history
