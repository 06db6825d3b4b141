"""The Ray Train worker loop: data shards -> augmentation -> gan_step -> validation -> report.

Runs on every worker of a ``TorchTrainer``, configured by one typed :class:`WorkerConfig`.
In order: :func:`join_group`, :func:`build_nets`, :func:`restore`, :func:`make_optimisers`,
then per epoch :func:`set_lr`, :func:`train_epoch`, :func:`validate`,
:func:`epoch_metrics` and :func:`save`. A :class:`TrainFeed` opens each epoch's data stream
while the previous epoch validates and saves, so Ray Data's start-up is off the training
pass. G and D are wrapped in DDP by ``prepare_model``; per-epoch losses and validation sums
are all-reduced so every worker sees the same global numbers and takes the same
early-stopping decision. Rank 0 alone writes the
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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sar2opt.config import Config, config_to_dict, reference_context_px
from sar2opt.data.inputs import REF_KEY, input_channels, input_keys
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
    "best_epoch", "samples_per_s", "data_frac", "data_frac_steady", "stream_open_s", "epoch_s",
    "world_size",
)  # fmt: skip
METRICS_FILE = "metrics.csv"
TB_DIR = "tensorboard"
PREFETCH_BATCHES = 4  # read ahead while the step runs: data out of step time
SHUFFLE_BUFFER_BATCHES = 16  # local shuffle buffer, in batches: mixes read groups of neighbours


def batch_keys(input_set: str, context_reference: bool = False) -> tuple[str, ...]:
    """Keys a training batch carries: the targets plus the input set's extra inputs, and
    ``ref`` when the stream fits each patch's reference over its context."""
    ref = (REF_KEY,) if context_reference else ()
    return (*KEYS, *[k for k in input_keys(input_set) if k not in KEYS], *ref)


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


@dataclass(frozen=True)
class WorkerConfig:
    """What every Train worker needs, typed; it crosses the Ray boundary pickled.

    ``config`` is the resolved run config: its ``model`` and ``train`` specs drive the loop
    and the whole of it goes into every checkpoint. ``norm``: the train split's
    {sar,opt[,dem]}_{mean,std} lists; ``aux_bands``: cube bands of the extra inputs
    ({"prior": [...], "dem": [...]}); ``index_hash``: of the patch index; ``batch_size``:
    per worker; ``run_uri``: the run's storage directory (metrics.csv, TensorBoard);
    ``cube_spec``: the cube's own ``CubeSpec`` (its attrs), whose prior window and cloud test
    inference repeats to read the prior the model was trained on (the first cube's, with
    several); ``cubes``: per training cube its identity, patch layout and held-out blocks
    (``evaluate.holdout.cube_record``), kept in every checkpoint.
    """

    config: Config
    in_bands: tuple[str, ...]
    out_bands: tuple[str, ...]
    norm: dict[str, list[float]]
    aux_bands: dict[str, list[str]]
    git_sha: str
    index_hash: str
    batch_size: int
    run_uri: str
    cube_spec: dict = field(default_factory=dict)
    cubes: tuple[dict, ...] = ()


#: The key of the WorkerConfig in ``train_loop_config``: Ray records that as a run setting and
#: wants a dict, so the typed config travels as its one value.
WORKER_KEY = "worker"


@dataclass(frozen=True)
class Worker:
    """This worker's place in the group and what it computes with."""

    rank: int
    world: int
    device: torch.device
    precision: str  # bf16 | fp32, resolved for the device
    channels_last: bool
    keys: tuple[str, ...]  # batch keys the model reads

    @property
    def amp(self) -> bool:
        return self.precision == "bf16"


@dataclass
class Nets:
    """G and D (DDP-wrapped by ``prepare_model``; D None for non-adversarial models) and
    their optimisers."""

    gen: torch.nn.Module
    disc: torch.nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None


@dataclass
class Progress:
    """Where the run stands: the last finished epoch, the step count, the metric history
    and the early-stopping state (restored from a checkpoint when resuming)."""

    epoch: int
    step: int
    history: list[dict]
    stopper: EarlyStopping


def join_group(wc: WorkerConfig) -> Worker:
    """Rank, world size, device and precision of this worker."""
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    precision = resolve_precision(wc.config.train.precision, device.type, cpu_supports_bf16())
    return Worker(
        ctx.get_world_rank(), ctx.get_world_size(), device, precision,
        wc.config.train.channels_last,
        batch_keys(wc.config.model.input_set, reference_context_px(wc.config) > 0),
    )  # fmt: skip


def build_nets(wc: WorkerConfig) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """G and D from the registry, seeded alike on every worker (DDP also broadcasts rank 0's
    weights); D is None for a non-adversarial model."""
    spec = wc.config.model
    co = len(wc.out_bands)
    in_ch, dem_ch = input_channels(spec.input_set, len(wc.in_bands), co)
    torch.manual_seed(wc.config.train.seed)
    return build_generator(spec, in_ch, co, dem_ch), build_discriminator(spec, in_ch + co)


def restore(
    wc: WorkerConfig, gen: torch.nn.Module, disc: torch.nn.Module | None
) -> tuple[Progress, dict | None]:
    """Load G and D from ``ray.train.get_checkpoint()`` if there is one; return the progress
    and the checkpoint's train state (None on a fresh start).

    The best value and bad-epoch count of early stopping continue; patience and min_delta
    follow this config.
    """
    stopper = EarlyStopping(wc.config.train.patience, wc.config.train.min_delta)
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return Progress(0, 0, [], stopper), None
    with ckpt.as_directory() as d:
        g_state, _ = load_checkpoint_weights(d)
        state = load_train_state(d)
    gen.load_state_dict(g_state)
    if disc is not None and state.get("disc") is not None:
        disc.load_state_dict(state["disc"])
    stopper = EarlyStopping.from_dict(
        {**state["early_stop"], "patience": stopper.patience, "min_delta": stopper.min_delta}
    )
    return Progress(int(state["epoch"]), int(state["step"]), list(state["history"]), stopper), state


def make_optimisers(
    wc: WorkerConfig, w: Worker, gen: torch.nn.Module, disc: torch.nn.Module | None,
    state: dict | None,
) -> Nets:  # fmt: skip
    """channels_last if asked, DDP through ``prepare_model``, Adam (beta1 0.5, as pix2pix)
    for G and D; the optimiser states restored when resuming."""
    if w.channels_last:
        gen = gen.to(memory_format=torch.channels_last)
        disc = None if disc is None else disc.to(memory_format=torch.channels_last)
    gen = ray.train.torch.prepare_model(gen)
    disc = None if disc is None else ray.train.torch.prepare_model(disc)
    lr = wc.config.train.lr
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = None if disc is None else torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    if state is not None:
        opt_g.load_state_dict(state["opt_g"])
        if opt_d is not None and state.get("opt_d") is not None:
            opt_d.load_state_dict(state["opt_d"])
    return Nets(gen, disc, opt_g, opt_d)


def set_lr(nets: Nets, wc: WorkerConfig, epoch: int) -> float:
    """The epoch's learning rate (a function of the epoch alone), set on both optimisers."""
    tr = wc.config.train
    lr = float(tr.lr) * lr_factor(epoch, tr.epochs, tr.lr_schedule, tr.warmup_epochs)
    for o in (nets.opt_g, nets.opt_d):
        for g in [] if o is None else o.param_groups:
            g["lr"] = lr
    return lr


def epoch_rng(seed: int, rank: int, epoch: int) -> tuple[np.random.Generator, int]:
    """The epoch's augmentation generator of (seed, rank, epoch) and the local shuffle seed,
    the generator's first draw (so a resumed run repeats both)."""
    rng = np.random.default_rng([int(seed), rank, epoch])
    return rng, int(rng.integers(2**31))


class TrainFeed:
    """This worker's training batches, epoch after epoch, each epoch's stream opened ahead.

    Opening an epoch's stream is Ray Data's fixed cost (~1.5 s here, on any split size): the
    split coordinator waits for every worker, builds a new executor, schedules the first read
    tasks, and the local shuffle buffer fills before the first batch. :meth:`open` does that
    in a background thread and pulls the epoch's first batch, so it overlaps the work before
    the epoch (validation, all-reduce, checkpoint; model set-up for the first epoch);
    :meth:`batches` then hands the stream over. The data still streams: what is held ahead is
    one epoch's shuffle buffer and prefetched batches, as during the epoch. Each epoch is a
    fresh pass of ``streaming_split``, so every patch comes once per epoch across workers,
    in an order shuffled by the epoch's seed.
    """

    def __init__(self, shard: object, batch_size: int, device: torch.device, seed: int, rank: int):
        self.shard, self.batch_size, self.device = shard, batch_size, device
        self.seed, self.rank = seed, rank
        self._pending: tuple[int, threading.Thread, dict] | None = None
        self.open_s = 0.0  # the last epoch's stream start-up, from open() to its first batch

    def _first_batch(self, epoch: int, box: dict) -> None:
        t0 = time.perf_counter()
        try:
            _, shuffle_seed = epoch_rng(self.seed, self.rank, epoch)
            # drop_last: every worker holds the same row count (equal split), so the same
            # number of batches -> DDP collectives stay in step; and no batch of 1 for BatchNorm.
            it = iter(
                self.shard.iter_torch_batches(
                    batch_size=self.batch_size,
                    dtypes=torch.float32,
                    device=self.device,
                    drop_last=True,
                    prefetch_batches=PREFETCH_BATCHES,
                    local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * self.batch_size,
                    local_shuffle_seed=shuffle_seed,
                )
            )
            box["first"], box["it"] = next(it, None), it
        except BaseException as e:  # noqa: BLE001 - re-raised by batches() in the loop's thread
            box["error"] = e
        box["open_s"] = time.perf_counter() - t0

    def open(self, epoch: int) -> None:
        """Start opening ``epoch``'s stream in the background (every worker must, as with
        iteration: the split coordinator starts an epoch when all have asked)."""
        box: dict = {}
        th = threading.Thread(
            target=self._first_batch, args=(epoch, box), name=f"train-feed-{epoch}", daemon=True
        )
        th.start()
        self._pending = (epoch, th, box)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """``epoch``'s batches (opened now unless :meth:`open` already did)."""
        if self._pending is None or self._pending[0] != epoch:
            self.open(epoch)
        _, th, box = self._pending
        self._pending = None
        th.join()
        self.open_s = box["open_s"]
        if "error" in box:
            raise box["error"]
        if box["first"] is None:
            return
        yield box["first"]
        yield from box["it"]


def train_epoch(
    wc: WorkerConfig, w: Worker, nets: Nets, feed: TrainFeed, epoch: int, step: int
) -> tuple[dict[str, float], int]:
    """One pass over this worker's shard: augment, ``gan_step``. Returns the loss sums, the
    sample count ``n``, the time spent waiting for batches (``wait_s``; ``first_wait_s``: the
    part of the stream's start-up that :class:`TrainFeed` did not hide), ``stream_open_s``
    (that start-up, overlapped or not) and ``train_s``; and the step count after the epoch."""
    t0 = time.perf_counter()
    rng, _ = epoch_rng(wc.config.train.seed, w.rank, epoch)
    losses = LossSpec.from_train(wc.config.train)
    sums = {**dict.fromkeys(LOSS_KEYS, 0.0), "n": 0.0, "wait_s": 0.0, "first_wait_s": 0.0}
    batches = feed.batches(epoch)
    while True:
        tw = time.perf_counter()
        batch = next(batches, None)
        waited = time.perf_counter() - tw
        sums["wait_s"] += waited
        if sums["n"] == 0:  # the epoch's pipeline start-up, reported apart
            sums["first_wait_s"] += waited
        if batch is None:
            break
        batch = _memory_format(augment({k: batch[k] for k in w.keys}, rng), w.channels_last)
        out = gan_step(
            nets.gen, nets.disc, nets.opt_g, nets.opt_d, batch, amp=w.amp, step=step,
            losses=losses, input_set=wc.config.model.input_set,
        )  # fmt: skip
        step += 1
        n = batch["sar"].shape[0]
        for k in LOSS_KEYS:
            sums[k] += out[k] * n
        sums["n"] += n
    sums["train_s"] = time.perf_counter() - t0
    sums["stream_open_s"] = feed.open_s
    return sums, step


def validate(wc: WorkerConfig, w: Worker, gen: torch.nn.Module, shard: object) -> dict:
    """Validation sums (``VAL_SUM_KEYS``) over this worker's shard of the val split."""
    vsums = dict.fromkeys(VAL_SUM_KEYS, 0.0)
    bare = unwrap(gen)  # no DDP wrapper: evaluation needs no collectives
    norm = wc.norm
    for batch in shard.iter_torch_batches(
        batch_size=wc.batch_size, dtypes=torch.float32, device=w.device
    ):
        b = _memory_format({k: batch[k] for k in w.keys}, w.channels_last)
        ev = eval_sums(
            bare,
            b,
            norm["opt_mean"],
            norm["opt_std"],
            input_set=wc.config.model.input_set,
            amp=w.amp,
        )
        for k in VAL_SUM_KEYS:
            vsums[k] += ev[k]
    return vsums


def epoch_metrics(
    w: Worker, epoch: int, lr: float, sums: dict, vsums: dict, progress: Progress, t0: float
) -> dict:
    """The epoch's row of metrics.csv from all workers' sums; updates early stopping."""
    g = _allreduce_sums({**sums, **{f"val_{k}": v for k, v in vsums.items()}}, w.device)
    n = max(g["n"], 1.0)
    val = val_metrics({k: g[f"val_{k}"] for k in VAL_SUM_KEYS})
    progress.stopper = progress.stopper.update(epoch, val["val_mae_refl"])
    return {
        "epoch": epoch,
        "lr": lr,
        **{k: g[k] / n for k in LOSS_KEYS},
        **val,
        "best_epoch": progress.stopper.best_epoch,
        "samples_per_s": g["n"] / max(sums["train_s"], 1e-9),
        # Time waiting for the next batch / time of the training pass, over all workers.
        "data_frac": g["wait_s"] / max(g["train_s"], 1e-9),
        # The same without each epoch's first batch (Ray Data starting the epoch's reads).
        "data_frac_steady": (g["wait_s"] - g["first_wait_s"])
        / max(g["train_s"] - g["first_wait_s"], 1e-9),
        # The stream's start-up (open to first batch), mean over workers; with open_ahead it
        # overlaps the previous epoch's validation and checkpoint, and only its unhidden part
        # is in data_frac.
        "stream_open_s": g["stream_open_s"] / w.world,
        "epoch_s": time.perf_counter() - t0,
        "world_size": w.world,
        "stopped": progress.stopper.stop,
    }


def log_epoch(wc: WorkerConfig, metrics: dict, best: bool) -> None:
    """The one progress line per epoch (rank 0)."""
    log.info(
        "epoch %d/%d  lr %.2e  g_l1 %.4f  d_loss %.4f  val MAE %.4f  PSNR %.2f dB  "
        "SSIM %.3f  %.1f samples/s  data %.0f%%  %.1f s%s",
        metrics["epoch"], wc.config.train.epochs, metrics["lr"], metrics["g_l1"], metrics["d_loss"],
        metrics["val_mae_refl"], metrics["val_psnr_db"], metrics["val_ssim"],
        metrics["samples_per_s"], 100 * metrics["data_frac"], metrics["epoch_s"],
        "  (best)" if best else "",
    )  # fmt: skip


def save(wc: WorkerConfig, w: Worker, nets: Nets, progress: Progress, metrics: dict) -> None:
    """Rank 0 writes the epoch's checkpoint (model.pt + train_state.pt) and reports it with
    the metrics; the other workers report the metrics (``report`` is a barrier)."""
    if w.rank != 0:
        ray.train.report(metrics)
        return
    meta = {
        "model": config_to_dict(wc.config.model),
        "in_bands": list(wc.in_bands),
        "out_bands": list(wc.out_bands),
        "norm": wc.norm,
        "input_set": wc.config.model.input_set,
        "aux_bands": wc.aux_bands,
        "cube_spec": wc.cube_spec,
        "cubes": list(wc.cubes),
        "config": config_to_dict(wc.config),
        "git_sha": wc.git_sha,
        "index_hash": wc.index_hash,
        "epoch": progress.epoch,
        "batch_size_per_worker": wc.batch_size,
        "precision": w.precision,
        "metrics": metrics,
    }
    state = {
        "epoch": progress.epoch,
        "step": progress.step,
        "disc": None if nets.disc is None else unwrap(nets.disc).state_dict(),
        "opt_g": nets.opt_g.state_dict(),
        "opt_d": None if nets.opt_d is None else nets.opt_d.state_dict(),
        "early_stop": progress.stopper.to_dict(),
        "history": progress.history,
    }
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(d, nets.gen, meta)
        save_train_state(d, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def train_loop_per_worker(config: dict[str, WorkerConfig]) -> list[dict]:
    """Ray Train entry point: :func:`run_worker` on ``config[WORKER_KEY]``."""
    return run_worker(config[WORKER_KEY])


def run_worker(wc: WorkerConfig) -> list[dict]:
    """Train G and D up to ``train.epochs`` epochs; rank 0 returns the metric history.

    Stops early after ``train.patience`` epochs without val MAE improving by ``min_delta``.
    """
    _quiet_report_logs()
    w = join_group(wc)
    gen, disc = build_nets(wc)
    progress, state = restore(wc, gen, disc)
    epochs = wc.config.train.epochs
    if w.rank == 0:
        what = f"resuming after epoch {progress.epoch}" if state is not None else "starting"
        log.info(
            "train: %s of %d; %d worker(s) on %s, %s, channels_last=%s",
            what, epochs, w.world, w.device, w.precision, w.channels_last,
        )  # fmt: skip
    if progress.stopper.stop:
        if w.rank == 0:
            log.info("train: already stopped early at epoch %d", progress.epoch)
        return progress.history

    feed = TrainFeed(
        ray.train.get_dataset_shard("train"), wc.batch_size, w.device, wc.config.train.seed, w.rank
    )
    ahead = wc.config.train.open_ahead  # false: each epoch opens its stream in its pass
    if ahead and progress.epoch < epochs:
        feed.open(progress.epoch + 1)  # behind the model set-up below
    nets = make_optimisers(wc, w, gen, disc, state)
    val_shard = ray.train.get_dataset_shard("val")
    run_log = RunLog(wc.run_uri) if w.rank == 0 else None
    for epoch in range(progress.epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        lr = set_lr(nets, wc, epoch)
        sums, progress.step = train_epoch(wc, w, nets, feed, epoch, progress.step)
        if ahead and epoch < epochs:  # the next epoch's stream opens behind validation + save
            feed.open(epoch + 1)
        vsums = validate(wc, w, nets.gen, val_shard)
        metrics = epoch_metrics(w, epoch, lr, sums, vsums, progress, t0)
        progress.epoch = epoch
        progress.history.append(metrics)
        if run_log is not None:
            log_epoch(wc, metrics, best=progress.stopper.best_epoch == epoch)
            run_log.epoch(metrics, progress.history)
        save(wc, w, nets, progress, metrics)
        if progress.stopper.stop:
            if w.rank == 0:
                s = progress.stopper
                log.info(
                    "train: early stop at epoch %d: val MAE has not improved for %d epochs "
                    "(best %.4f at epoch %d)",
                    epoch, s.patience, s.best, s.best_epoch,
                )  # fmt: skip
            break
    if run_log is not None:
        run_log.close()
    return progress.history
