"""The Ray Train worker loop: data shards -> augmentation -> gan_step -> validation -> report.

Runs on every worker of a ``TorchTrainer``. G and D are wrapped in DDP by
``prepare_model``; per-epoch losses and validation sums are all-reduced so every worker sees
the same global numbers and takes the same early-stopping decision. Rank 0 alone writes the
checkpoint (model.pt + train_state.pt), metrics.csv and TensorBoard events; every worker
calls ``ray.train.report`` (it is a barrier).

Resume: a checkpoint from ``ray.train.get_checkpoint()`` (a re-run with the same storage
path and run name, or a restart after a worker failure) restores G, D, both optimisers, the
epoch and step counters, the early-stopping state and the metric history; the learning rate
is a function of the epoch (``schedule.lr_factor``) and the augmentation seed of
(seed, rank, epoch), so a resumed run continues where the killed one stood.
"""

from __future__ import annotations

import csv
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sar2opt.config import ModelSpec
from sar2opt.data.inputs import input_channels, input_keys
from sar2opt.models import build_discriminator, build_generator
from sar2opt.train.checkpoint import (
    load_checkpoint_weights,
    load_train_state,
    save_checkpoint,
    save_train_state,
    unwrap,
)
from sar2opt.train.schedule import EarlyStopping, cpu_supports_bf16, lr_factor, resolve_precision
from sar2opt.train.step import LOSS_KEYS, VAL_SUM_KEYS, LossSpec, eval_sums, gan_step, val_metrics

KEYS = ("sar", "opt", "mask")
#: One row per epoch in metrics.csv (the run's and the job's), in this order.
METRIC_COLUMNS = (
    "epoch", "lr", *LOSS_KEYS, "val_l1", "val_mae_refl", "val_psnr_db", "val_ssim",
    "best_epoch", "samples_per_s", "data_frac", "data_frac_steady", "epoch_s", "world_size",
)  # fmt: skip
METRICS_FILE = "metrics.csv"
TB_DIR = "tensorboard"


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


def _memory_format(batch: dict[str, torch.Tensor], channels_last: bool) -> dict:
    if not channels_last:
        return batch
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}


def _allreduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over all workers (identity for a single worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return dict(values)
    names = sorted(values)
    t = torch.tensor([values[k] for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(names, t.tolist(), strict=True))


def write_metrics_csv(path: str | Path, history: list[dict]) -> Path:
    """metrics.csv: one row per epoch, METRIC_COLUMNS (absent values left empty)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    return path


class RunLog:
    """metrics.csv and TensorBoard event files under the run's storage directory.

    A local ``run_uri`` is written in place (TensorBoard can watch it live). A remote one
    (``s3://...``) is written to a scratch directory and copied up after every epoch with
    pyarrow's filesystems, the ones Ray Train persists checkpoints with. A resumed run adds
    a new event file to the same directory; TensorBoard reads them as one run.
    """

    def __init__(self, run_uri: str) -> None:
        self.remote = run_uri if "://" in run_uri else None
        self.dir = (
            Path(tempfile.mkdtemp(prefix="sar2opt-runlog-")) if self.remote else Path(run_uri)
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._writer = None

    def epoch(self, metrics: dict, history: list[dict]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir / TB_DIR))
        step = int(metrics["epoch"])
        for k, v in metrics.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self._writer.add_scalar(k, v, step)
        self._writer.flush()
        write_metrics_csv(self.dir / METRICS_FILE, history)
        if self.remote:
            import pyarrow.fs

            pyarrow.fs.copy_files(str(self.dir), self.remote)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _quiet_report_logs() -> None:
    """Ray Train 2.60 logs every ``report`` (its whole metrics dict, from every rank) at INFO
    under a logger named by file path, which its own log-level filter misses; our one line
    per epoch says the same."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> list[dict]:
    """Train G and D up to ``config["train"]["epochs"]`` epochs; rank 0 returns the history.

    ``config`` (plain types): ``model`` and ``train`` (spec dicts), ``in_bands``,
    ``out_bands``, ``norm`` ({sar,opt,dem}_{mean,std} lists), ``aux_bands`` (cube bands of
    the extra inputs: {"prior": [...], "dem": [...]}), ``config`` (full resolved config),
    ``git_sha``, ``index_hash`` (of the patch index), ``batch_size`` (per worker) and
    ``run_uri`` (the run's storage directory, for metrics.csv and TensorBoard).
    Stops early after ``train.patience`` epochs without val MAE improving by ``min_delta``.
    """
    _quiet_report_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tr = config["train"]
    spec = ModelSpec(**config["model"])
    cs, co = len(config["in_bands"]), len(config["out_bands"])
    keys = batch_keys(spec.input_set)
    in_ch, dem_ch = input_channels(spec.input_set, cs, co)
    losses = LossSpec.from_train(tr)
    device = ray.train.torch.get_device()
    precision = resolve_precision(tr.get("precision", "auto"), device.type, cpu_supports_bf16())
    amp = precision == "bf16"
    channels_last = bool(tr.get("channels_last", False))
    epochs = int(tr["epochs"])

    torch.manual_seed(tr["seed"])  # same init everywhere; DDP also broadcasts rank 0's weights
    gen_m = build_generator(spec, in_ch, co, dem_ch)
    disc_m = build_discriminator(spec, in_ch + co)  # None: non-adversarial model
    stopper = EarlyStopping(int(tr.get("patience", 0)), float(tr.get("min_delta", 0.0)))
    start_epoch, step, history, state = 0, 0, [], None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            g_state, _ = load_checkpoint_weights(d)
            state = load_train_state(d)
        gen_m.load_state_dict(g_state)
        if disc_m is not None and state.get("disc") is not None:
            disc_m.load_state_dict(state["disc"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = list(state["history"])
        # Best value and bad-epoch count continue; patience/min_delta follow this config.
        stopper = EarlyStopping.from_dict(
            {**state["early_stop"], "patience": stopper.patience, "min_delta": stopper.min_delta}
        )
    if channels_last:
        gen_m = gen_m.to(memory_format=torch.channels_last)
        disc_m = None if disc_m is None else disc_m.to(memory_format=torch.channels_last)
    gen = ray.train.torch.prepare_model(gen_m)
    disc = None if disc_m is None else ray.train.torch.prepare_model(disc_m)
    opt_g = torch.optim.Adam(gen.parameters(), lr=tr["lr"], betas=(0.5, 0.999))
    opt_d = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=tr["lr"], betas=(0.5, 0.999))
    if state is not None:
        opt_g.load_state_dict(state["opt_g"])
        if opt_d is not None and state.get("opt_d") is not None:
            opt_d.load_state_dict(state["opt_d"])
    if rank == 0:
        what = f"resuming after epoch {start_epoch}" if state is not None else "starting"
        log.info(
            "train: %s of %d; %d worker(s) on %s, %s, channels_last=%s",
            what, epochs, world, device, precision, channels_last,
        )  # fmt: skip
    if stopper.stop:
        if rank == 0:
            log.info("train: already stopped early at epoch %d", start_epoch)
        return history

    norm = config["norm"]
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    bs = int(config["batch_size"])
    run_log = RunLog(config["run_uri"]) if rank == 0 else None

    for epoch in range(start_epoch + 1, epochs + 1):
        lr = float(tr["lr"]) * lr_factor(
            epoch, epochs, tr.get("lr_schedule", "constant"), int(tr.get("warmup_epochs", 0))
        )
        for o in (opt_g, opt_d):
            for g in [] if o is None else o.param_groups:
                g["lr"] = lr
        rng = np.random.default_rng([int(tr["seed"]), rank, epoch])
        t0 = time.perf_counter()
        sums = {**dict.fromkeys(LOSS_KEYS, 0.0), "n": 0.0, "wait_s": 0.0, "first_wait_s": 0.0}
        # drop_last: every worker holds the same row count (equal split), so the same number
        # of batches -> DDP collectives stay in step; and no batch of 1 for BatchNorm.
        batches = iter(
            train_shard.iter_torch_batches(
                batch_size=bs,
                dtypes=torch.float32,
                device=device,
                drop_last=True,
                prefetch_batches=4,  # read ahead while the step runs: data out of step time
                local_shuffle_buffer_size=16 * bs,  # mixes read groups of 128 neighbours
                local_shuffle_seed=int(rng.integers(2**31)),
            )
        )
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            waited = time.perf_counter() - tw
            sums["wait_s"] += waited
            if sums["n"] == 0:  # the epoch's pipeline start-up, reported apart
                sums["first_wait_s"] += waited
            if batch is None:
                break
            batch = _memory_format(augment({k: batch[k] for k in keys}, rng), channels_last)
            out = gan_step(
                gen, disc, opt_g, opt_d, batch, amp=amp, step=step, losses=losses,
                input_set=spec.input_set,
            )  # fmt: skip
            step += 1
            n = batch["sar"].shape[0]
            for k in LOSS_KEYS:
                sums[k] += out[k] * n
            sums["n"] += n
        train_s = time.perf_counter() - t0
        sums["train_s"] = train_s

        vsums = dict.fromkeys(VAL_SUM_KEYS, 0.0)
        bare = unwrap(gen)  # no DDP wrapper: evaluation needs no collectives
        for batch in val_shard.iter_torch_batches(
            batch_size=bs, dtypes=torch.float32, device=device
        ):
            b = _memory_format({k: batch[k] for k in keys}, channels_last)
            ev = eval_sums(
                bare, b, norm["opt_mean"], norm["opt_std"], input_set=spec.input_set, amp=amp
            )
            for k in VAL_SUM_KEYS:
                vsums[k] += ev[k]

        g = _allreduce_sums({**sums, **{f"val_{k}": v for k, v in vsums.items()}}, device)
        n = max(g["n"], 1.0)
        val = val_metrics({k: g[f"val_{k}"] for k in VAL_SUM_KEYS})
        stopper = stopper.update(epoch, val["val_mae_refl"])
        metrics = {
            "epoch": epoch,
            "lr": lr,
            **{k: g[k] / n for k in LOSS_KEYS},
            **val,
            "best_epoch": stopper.best_epoch,
            "samples_per_s": g["n"] / max(train_s, 1e-9),
            # Time waiting for the next batch / time of the training pass, over all workers.
            "data_frac": g["wait_s"] / max(g["train_s"], 1e-9),
            # The same without each epoch's first batch (Ray Data starting the epoch's reads).
            "data_frac_steady": (g["wait_s"] - g["first_wait_s"])
            / max(g["train_s"] - g["first_wait_s"], 1e-9),
            "epoch_s": time.perf_counter() - t0,
            "world_size": world,
            "stopped": stopper.stop,
        }
        history.append(metrics)
        if rank == 0:
            log.info(
                "epoch %d/%d  lr %.2e  g_l1 %.4f  d_loss %.4f  val MAE %.4f  PSNR %.2f dB  "
                "SSIM %.3f  %.1f samples/s  data %.0f%%  %.1f s%s",
                epoch, epochs, lr, metrics["g_l1"], metrics["d_loss"], val["val_mae_refl"],
                val["val_psnr_db"], val["val_ssim"], metrics["samples_per_s"],
                100 * metrics["data_frac"], metrics["epoch_s"],
                "  (best)" if stopper.best_epoch == epoch else "",
            )  # fmt: skip
            run_log.epoch(metrics, history)
            meta = {
                "model": config["model"],
                "in_bands": config["in_bands"],
                "out_bands": config["out_bands"],
                "norm": norm,
                "input_set": spec.input_set,
                "aux_bands": config.get("aux_bands", {}),
                "config": config["config"],
                "git_sha": config["git_sha"],
                "index_hash": config.get("index_hash"),
                "epoch": epoch,
                "batch_size_per_worker": bs,
                "precision": precision,
                "metrics": metrics,
            }
            state = {
                "epoch": epoch,
                "step": step,
                "disc": None if disc is None else unwrap(disc).state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": None if opt_d is None else opt_d.state_dict(),
                "early_stop": stopper.to_dict(),
                "history": history,
            }
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(d, gen, meta)
                save_train_state(d, state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if stopper.stop:
            if rank == 0:
                log.info(
                    "train: early stop at epoch %d: val MAE has not improved for %d epochs "
                    "(best %.4f at epoch %d)",
                    epoch, stopper.patience, stopper.best, stopper.best_epoch,
                )  # fmt: skip
            break
    if run_log is not None:
        run_log.close()
    return history
