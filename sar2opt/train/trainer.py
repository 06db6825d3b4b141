"""Driver side of training: cube -> patches -> Ray datasets -> TorchTrainer -> checkpoint.

Normalisation statistics come from the training split only. The run lives under
``RunConfig(storage_path, name)`` (local or ``s3://``): re-running the same job with the
same storage path and run name resumes it from its latest checkpoint. After training, the
BEST checkpoint (lowest validation MAE) is copied to ``out/checkpoint``, its uncertainty is
calibrated on the validation split (``calibrate``: stated spread -> expected |error|), and it
is scored on the held-out test patches next to the constant train-mean colour and a ridge fit
from the SAR (``sar2opt.evaluate.holdout``), so the model's number never stands alone. The
workers get the run as one typed ``loop.WorkerConfig``.

Several cubes (``train_model([a, b, ...])``, ``jobs/train.py --cube a --cube b``): one model
on the patches of all of them, on the optical bands they share; each cube is split into
train / val / test by its own blocks (one patch size for all), the statistics are pooled over
their train splits, a cloud-free cube borrows the others' real clouds, and the checkpoint
records every cube (``meta["cubes"]``: ``evaluate.holdout.cube_record``).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray
import ray.data
import torch
import xarray as xr
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from sar2opt.config import Config, ModelSpec, config_to_dict, reference_context_px
from sar2opt.data.index import (
    assign_blocks,
    balance_cubes,
    block_size,
    build_patch_index,
    index_hash,
    resolve_patches,
    resolve_patches_common,
    split_counts,
)
from sar2opt.data.inputs import uses_cloudy, uses_dem, uses_prior
from sar2opt.data.patches import CLOUD_MASK_BAND, CLOUDY_PREFIX, DEM_BAND, PRIOR_PREFIX, PatchError
from sar2opt.data.stream import (
    CloudMasks,
    ReferenceContext,
    cache_split,
    cube_sources,
    lend_cloud_windows,
    norm_stats,
    patch_bytes,
    patch_dataset,
)
from sar2opt.errors import Sar2OptError
from sar2opt.evaluate.holdout import cube_record, format_scores, score_checkpoint
from sar2opt.infer.calibration import format_decile_table
from sar2opt.provenance import git_sha
from sar2opt.train.calibrate import calibrate_checkpoint
from sar2opt.train.checkpoint import load_generator, load_meta
from sar2opt.train.loop import (
    METRIC_COLUMNS,
    WORKER_KEY,
    WorkerConfig,
    train_loop_per_worker,
    write_metrics_csv,
)
from sar2opt.train.reference_gate import (
    SharedScenes,
    format_gate,
    gate_checkpoint,
    val_batches,
)
from sar2opt.train.schedule import auto_cpus_per_worker

__all__ = ["METRIC_COLUMNS", "TrainError", "train_model"]

ROWS_PER_READ = 128  # patches per Ray Data read task: neighbours share the store's chunks
# Train and val splits are read once into the object store when both fit in this share of
# it (else they stream from the Zarr store every epoch).
CACHE_STORE_FRACTION = 0.25
# Cloud removal (SC/SCO/SCOD): the share of train, val and test patches that get the cloud
# mask of another date on top of their own (``stream.CloudMasks``): the rest keep their own.
CLOUD_MASK_RATE = 0.5
# Sets with a prior (SO, SOD, SCO, SCOD): the share of patches whose prior is withheld (the
# band mean, as inference has where no clear S2 lies within prior_days).
PRIOR_GAP_RATE = 0.2
SCORE_ATTR = "val_mae_refl"  # the best checkpoint has the lowest validation MAE
log = logging.getLogger(__name__)


class TrainError(Sar2OptError):
    """Training cannot start (unreadable cube, a different run under the same name) or did
    not produce a checkpoint."""


def _open_cube(cube_path: str | Path) -> tuple[xr.DataArray, list[str], list[str], dict]:
    try:
        ds = xr.open_zarr(str(cube_path))
    except (FileNotFoundError, OSError, ValueError, KeyError) as e:
        raise TrainError(f"cannot open cube {cube_path}: {e}") from None
    if "cube" not in ds or "sar_bands" not in ds.attrs or "opt_bands" not in ds.attrs:
        raise TrainError(f"{cube_path} lacks variable 'cube' or attrs sar_bands/opt_bands")
    return ds["cube"], list(ds.attrs["sar_bands"]), list(ds.attrs["opt_bands"]), dict(ds.attrs)


def _of_bands(listed, attrs: dict, opt_bands: list[str]) -> list[str] | None:
    """The cube's per-optical-band aux names (``listed``, in the order of its ``opt_bands``,
    maybe a mask after them) for a subset ``opt_bands`` of its optical bands."""
    if not listed:
        return None
    own = list(attrs.get("opt_bands") or [])
    if own == list(opt_bands) or not set(opt_bands) <= set(own) or len(listed) < len(own):
        return list(listed)
    return [listed[own.index(b)] for b in opt_bands] + list(listed[len(own) :])


def aux_bands(attrs: dict, opt_bands: list[str], input_set: str) -> dict[str, list[str]]:
    """Cube bands of the input set's extra inputs, from the cube attrs or the default names
    (for ``opt_bands`` a subset of the cube's: those bands' prior / cloudy bands)."""
    out: dict[str, list[str]] = {}
    if uses_cloudy(input_set):
        out["cloudy"] = _of_bands(attrs.get("cloudy_bands"), attrs, opt_bands) or [
            *(CLOUDY_PREFIX + b for b in opt_bands), CLOUD_MASK_BAND
        ]  # fmt: skip
    if uses_prior(input_set):
        out["prior"] = _of_bands(attrs.get("prior_bands"), attrs, opt_bands) or [
            PRIOR_PREFIX + b for b in opt_bands
        ]
    if uses_dem(input_set):
        out["dem"] = [str(attrs.get("dem_band") or DEM_BAND)]
    return out


def _as(reliability: dict) -> str:
    """How the calibration was fitted and checked, for the decile table's heading."""
    on, checked = reliability["on"], reliability["checked_on"]
    return f"both as {on}" if on == checked else f"fitted as {on}, checked as {checked}"


def cube_name(path: str | Path) -> str:
    """A cube's short name in messages: its folder for ``<set>/cube.zarr``, else its stem."""
    p = Path(path)
    return p.parent.name if p.stem == "cube" and p.parent.name else p.stem


@dataclass(frozen=True)
class Cubes:
    """The training cubes, opened: paths (resolved), arrays, attrs, and the bands trained
    on (SAR bands every cube shares; the optical bands all cubes have, in the first's order)."""

    paths: tuple[str, ...]
    arrays: tuple[xr.DataArray, ...]
    attrs: tuple[dict, ...]
    sar_bands: list[str]
    opt_bands: list[str]
    dropped: tuple[str, ...] = ()  # optical bands of the first cube another one lacks

    @property
    def path(self) -> str | tuple[str, ...]:
        """What the readers take: one path, or the tuple (index column ``cube``)."""
        return self.paths[0] if len(self.paths) == 1 else self.paths


def open_cubes(cube_paths: Sequence[str | Path]) -> Cubes:
    """Open every cube; refuse SAR bands that differ; keep the optical bands they share."""
    paths = tuple(str(Path(p).resolve()) for p in cube_paths)
    if not paths:
        raise TrainError("no cube to train on")
    if len(set(paths)) < len(paths):
        raise TrainError("the same cube is given twice")
    opened = [_open_cube(p) for p in paths]
    sar = opened[0][1]
    for p, (_, s, _, _) in zip(paths, opened, strict=True):
        if s != sar:
            raise TrainError(f"{p} has SAR bands {s}, {paths[0]} {sar}: train on one kind")
    opt = [b for b in opened[0][2] if all(b in o[2] for o in opened)]
    if not opt:
        raise TrainError("the cubes share no optical band")
    dropped = tuple(b for b in opened[0][2] if b not in opt)
    return Cubes(paths, tuple(o[0] for o in opened), tuple(o[3] for o in opened), sar, opt, dropped)


def cube_patch_specs(cubes: Cubes, cfg) -> list:
    """Each cube's patch layout (``PatchSpec`` with sizes resolved from its grid): one cube's
    own, or one patch size common to several (``resolve_patches_common``)."""
    shapes = [(a.sizes["y"], a.sizes["x"]) for a in cubes.arrays]
    if len(shapes) == 1:
        return [resolve_patches(cfg.patches, *shapes[0])]
    return resolve_patches_common(cfg.patches, shapes)


def reference_context_for(cubes: Cubes, cfg, specs: Sequence) -> ReferenceContext | None:
    """The context each patch's scene-fit reference is fitted over (``stream.ReferenceContext``)
    under each cube's patch layout ``specs`` (``cube_patch_specs``), None when the model has
    none (``config.reference_context_px``)."""
    side = reference_context_px(cfg)
    if side <= 0:
        return None
    labels = tuple(
        assign_blocks(a.sizes["y"], a.sizes["x"], spec)
        for a, spec in zip(cubes.arrays, specs, strict=True)
    )
    return ReferenceContext(side, cfg.model.input_set, tuple(block_size(s) for s in specs), labels)


def index_cubes(
    cubes: Cubes, aux: dict, cfg, specs: Sequence | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The patch index of every cube, each cut into blocks and splits by its own grid
    (``resolve_patches_common``: one patch size; ``specs`` when the caller resolved them),
    concatenated with column ``cube`` (its position; no such column for one cube, whose
    index is as it always was), and each cube's record for the checkpoint
    (``holdout.cube_record``)."""
    one = len(cubes.paths) == 1
    specs = cube_patch_specs(cubes, cfg) if specs is None else specs
    parts, records = [], []
    for k, (path, arr, attrs, spec) in enumerate(
        zip(cubes.paths, cubes.arrays, cubes.attrs, specs, strict=True)
    ):
        try:
            idx = build_patch_index(
                arr, cubes.sar_bands, cubes.opt_bands, spec,
                input_set=cfg.model.input_set, dem_band=aux.get("dem", [DEM_BAND])[0],
                prior_bands=aux.get("prior"), cloudy_bands=aux.get("cloudy"),
            )  # fmt: skip
        except PatchError as e:
            raise (e if one else PatchError(f"{cube_name(path)}: {e}")) from None
        shape = (arr.sizes["time"], arr.sizes["y"], arr.sizes["x"])
        records.append(
            {"name": cube_name(path), **cube_record(path, shape, spec, attrs),
             "patches_per_split": split_counts(idx)}
        )  # fmt: skip
        if not one:
            idx.insert(0, "cube", k)
        parts.append(idx)
    if one:
        return parts[0], records
    index = pd.concat(parts, ignore_index=True)
    index.attrs.update({k: parts[0].attrs[k] for k in ("patch_px", "split_seed")})
    index.attrs["cubes"] = [dict(p.attrs) for p in parts]
    return index, records


@dataclass(frozen=True)
class TrainData:
    """The patch index and the streamed datasets the driver hands to Ray Train."""

    cube_path: str | tuple[str, ...]  # one cube, or several (index column ``cube``)
    index: pd.DataFrame  # sar2opt.data.index columns; split train / val / test
    datasets: dict  # "train", "val": ray.data.Dataset of normalised patches
    norm: dict  # {sar,opt[,dem]}_{mean,std} lists, from the training split
    counts: dict  # patches per split
    index_hash: str
    read_kw: dict  # sar_bands, opt_bands, aux, norm, patch_px[, cloud_masks]: read_patches
    cached_mb: float  # train + val held in the object store; 0 = streamed from the store
    cubes: tuple[dict, ...] = ()  # per cube: holdout.cube_record + name, patches_per_split
    clouds: str = ""  # where the clouds laid on cloud-removal patches come from (a line)
    # each patch's scene-fit reference over an inference-sized window (batch key "ref")
    reference_context: ReferenceContext | None = None
    balance: str = ""  # what an epoch reads of each cube, when some are repeated (a line)


def _sizes(index: pd.DataFrame, spec) -> str:
    """The patch layout trained on, and whether it was derived from the grid."""
    auto = " (auto: patches.patch_px unset)" if spec.patch_px is None else ""
    per = index.attrs.get("cubes") or [index.attrs]
    blocks = "/".join(str(a["block_px"]) for a in per)
    gaps = "/".join(str(a["gap_px"]) for a in per)
    return f"{index.attrs['patch_px']} px, blocks {blocks} px, gap {gaps} px{auto}"


def cloud_masks_for(
    cubes: Cubes, index: pd.DataFrame, aux: dict, patch_px: int, seed: int
) -> tuple[CloudMasks | None, str]:
    """The clouds laid on training patches (``stream.CloudMasks``) and a line saying where
    they come from: each cube's own other dates; for a cube whose train split has (almost)
    no cloud, real cloudy windows of the other cubes, or synthetic shapes when none has."""
    if "cloudy" not in aux and "prior" not in aux:
        return None, ""
    borrow: tuple[int, ...] = ()
    lent: tuple = ()
    line = ""
    if "cloudy" in aux:
        sources = cube_sources(cubes.path, cubes.sar_bands, cubes.opt_bands, aux)
        mask_pos = len(cubes.sar_bands) + len(cubes.opt_bands) + len(aux["cloudy"])
        borrow, lent, share = lend_cloud_windows(sources, index, mask_pos, patch_px, seed=seed)
        how = []
        for k, path in enumerate(cubes.paths):
            where = (
                "its own other dates"
                if k not in borrow
                else f"{len(lent)} cloudy windows of the other cube(s)"
                if lent
                else "synthetic cloud shapes (no cube has real clouds)"
            )
            how.append(f"{cube_name(path)} ({100 * share[k]:.0f} % cloudy): {where}")
        line = "clouds laid on training patches: " + "; ".join(how)
    masks = CloudMasks(
        seed=seed,
        rate=CLOUD_MASK_RATE if "cloudy" in aux else 0.0,
        prior_gap_rate=PRIOR_GAP_RATE if "prior" in aux else 0.0,
        borrow=borrow,
        lent=lent,
    )
    return masks, line


def prepare_data(cubes: Cubes, aux: dict, cfg) -> TrainData:
    """Index the cube's patches, compute the train-split statistics, build the datasets.

    Only the index (a few numbers per patch) is held here; the patches are read from the
    store in Ray Data read tasks of a quarter CPU: once, into the object store, when the train
    and val splits fit in ``CACHE_STORE_FRACTION`` of it (Ray running), else every epoch.
    A cloud-removal input set reads every split with laid clouds (``cloud_masks_for``): the
    model learns to fill, and validation and the test scores measure the fill, not a copy.
    Several cubes: one index (column ``cube``), statistics pooled over their train splits.
    """
    cube_path = cubes.path
    sar_bands, opt_bands = cubes.sar_bands, cubes.opt_bands
    specs = cube_patch_specs(cubes, cfg)  # once: an auto layout is derived and logged here
    index, records = index_cubes(cubes, aux, cfg, specs)
    p = int(index.attrs["patch_px"])  # patches.patch_px, or derived from the grid when unset
    norm = norm_stats(cube_path, index, sar_bands, opt_bands, aux, seed=cfg.train.seed, patch_px=p)
    kw = {"sar_bands": sar_bands, "opt_bands": opt_bands, "aux": aux, "norm": norm, "patch_px": p}
    masks, clouds = cloud_masks_for(cubes, index, aux, p, cfg.train.seed)
    if masks is not None:
        kw["cloud_masks"] = masks
    # the streams alone carry the context reference: the patch-level checks after training
    # (held-out scores, calibration) run the predictor as it fits on the window it is given
    ctx = reference_context_for(cubes, cfg, specs)
    # one log line per epoch is the job's progress: not Ray Data's plan of each epoch's stream
    ray.data.DataContext.get_current().print_on_execution_start = False
    rows = {s: index[index["split"] == s] for s in ("train", "val")}
    rows = {s: r for s, r in rows.items() if len(r)}
    balance = ""
    if "train" in rows:
        rows["train"] = balance_cubes(rows["train"], cfg.train.cube_balance)
        balance = balance_line(rows["train"], cubes, cfg.train.cube_balance)
    datasets = {
        s: patch_dataset(
            cube_path,
            r,
            **kw,
            rows_per_read=ROWS_PER_READ,
            shuffle_seed=cfg.train.seed if s == "train" else None,
            reference_context=ctx,
        )  # fmt: skip
        for s, r in rows.items()
    }
    counts = split_counts(index)
    channels = len(sar_bands) + len(opt_bands) + 1 + sum(len(v) for v in aux.values())
    channels += len(opt_bands) if ctx is not None else 0  # the reference
    row_bytes = patch_bytes(channels, p)
    n_rows = sum(len(r) for r in rows.values())
    store = ray.cluster_resources().get("object_store_memory", 0) if ray.is_initialized() else 0
    cached_mb = 0.0
    if 0 < n_rows * row_bytes <= CACHE_STORE_FRACTION * store:
        for s, ds in datasets.items():
            datasets[s] = cache_split(ds, cfg.train.seed if s == "train" else None)
        cached_mb = n_rows * row_bytes / 1e6
    return TrainData(
        cube_path, index, datasets, norm, counts, index_hash(index), kw, cached_mb,
        tuple(records), clouds, ctx, balance,
    )  # fmt: skip


def balance_line(train: pd.DataFrame, cubes: Cubes, power: float) -> str:
    """What an epoch reads of each cube when ``index.balance_cubes`` repeated some ("" when
    nothing was repeated)."""
    if "repeat" not in train.columns:
        return ""
    per = train.groupby("cube")["repeat"].agg(["size", "max"])
    reads = ", ".join(
        f"{cube_name(cubes.paths[int(k)])} {int(n)}" + (f" ({int(m) + 1}x)" if m else "")
        for k, (n, m) in per.iterrows()
    )
    return f"an epoch reads (train.cube_balance {power:g}): {reads} patches"


def cube_path_list(cube_path: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """One cube path or several, as a list."""
    return [cube_path] if isinstance(cube_path, (str, Path)) else list(cube_path)


# --- storage: where the run lives, and whether an existing run there is this one -----------


def storage_uri(storage_path: str | None, out_dir: Path) -> str:
    """The RunConfig storage path: ``train.storage_path`` (local -> absolute) or out/ray_results."""
    if not storage_path:
        return str(out_dir / "ray_results")
    if "://" in storage_path:
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve())


def previous_run_meta(storage: str, name: str) -> dict | None:
    """Meta of the latest checkpoint of run ``name`` under ``storage``; None if no run is there.

    Reads Ray Train's checkpoint manager snapshot (the file a re-run restores from) and
    the checkpoint's model.pt, through pyarrow's filesystems (local or s3://).
    """
    import pyarrow.fs as pafs

    if "://" in storage:
        fs, base = pafs.FileSystem.from_uri(storage)
    else:
        fs, base = pafs.LocalFileSystem(), storage
    run = f"{base}/{name}"
    snap = f"{run}/checkpoint_manager_snapshot.json"
    if fs.get_file_info(snap).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(snap) as f:
        latest = json.loads(f.read().decode()).get("latest_checkpoint_result") or {}
    if not latest.get("checkpoint_dir_name"):
        return None
    with fs.open_input_file(f"{run}/{latest['checkpoint_dir_name']}/model.pt") as f:
        blob = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    return blob.get("meta", {})


def check_resumable(prev: dict, model: dict, index_hash: str, where: str) -> None:
    """A re-run resumes only the same model on the same patches; anything else is refused.

    A run saved before a ``ModelSpec`` field existed (e.g. ``model.reference``) holds the
    field's default: the saved model is read with the defaults filled in.
    """
    saved = prev.get("model")
    if isinstance(saved, dict):
        saved = {**config_to_dict(ModelSpec()), **saved}
    if saved != model:
        raise TrainError(
            f"run {where} holds a different model ({prev.get('model')}); use another "
            "train.run_name or remove that run"
        )
    if prev.get("index_hash") != index_hash:
        raise TrainError(
            f"run {where} was trained on another patch index ({prev.get('index_hash')} != "
            f"{index_hash}); use another train.run_name or remove that run"
        )


def train_model(
    cube_path: str | Path | Sequence[str | Path], out_dir: str | Path, cfg: Config
) -> Path:
    """Train (or resume) on the cube, or on several cubes at once (one model on the patches
    of all; each cube split by its own blocks, statistics pooled over their train splits);
    return ``out_dir/checkpoint``, the best epoch's copy.

    Also writes ``out_dir/metrics.csv`` (one row per epoch, resumed epochs included) and
    ``out_dir/test_scores.json`` (the best checkpoint vs. the train-mean colour and ridge
    baselines on the test patches: MAE, RMSE, PSNR, SSIM in reflectance). The Ray run itself
    (checkpoints, metrics.csv, TensorBoard events) is under ``train.storage_path`` /
    ``train.run_name``. Expects Ray to be initialised by the caller (or lets TorchTrainer
    start a local instance). The checkpoint records every cube (``meta["cubes"]``: identity,
    patch layout, val and test blocks), so evaluation scores each on its held-out blocks.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cubes = open_cubes(cube_path_list(cube_path))
    sar_bands, opt_bands, attrs = cubes.sar_bands, cubes.opt_bands, cubes.attrs[0]
    tr = cfg.train
    aux = aux_bands(attrs, opt_bands, cfg.model.input_set)
    for p, a in zip(cubes.paths[1:], cubes.attrs[1:], strict=True):
        if aux_bands(a, opt_bands, cfg.model.input_set) != aux:
            raise TrainError(f"{p} names its extra input bands otherwise than {cubes.paths[0]}")
    if len(cubes.paths) > 1:
        left_out = f" ({' '.join(cubes.dropped)} left out: not in every cube)"
        print(
            f"cubes: {', '.join(cube_name(p) for p in cubes.paths)}; optical bands "
            f"{' '.join(opt_bands)}{left_out if cubes.dropped else ''}",
            flush=True,
        )
    data = prepare_data(cubes, aux, cfg)
    nw = tr.num_workers
    if data.counts.get("val", 0) == 0:
        raise PatchError(
            "no validation patches: the validation blocks (patches.val_frac="
            f"{cfg.patches.val_frac}) are too cloudy or too few"
        )
    if data.counts["train"] < nw:
        raise PatchError(f"{data.counts['train']} training patches cannot feed {nw} workers")
    # Per-worker batch: a worker whose shard is smaller than one batch would train on nothing.
    batch_size = max(1, min(tr.batch_size, data.counts["train"] // nw))
    total_cpus = float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else 1.0
    cpus = tr.cpus_per_worker or auto_cpus_per_worker(total_cpus, nw, tr.use_gpu)
    held = f"cached ({data.cached_mb:.0f} MB)" if data.cached_mb else "streamed"
    print(
        f"patches: {', '.join(f'{v} {k}' for k, v in data.counts.items())} "
        f"({_sizes(data.index, cfg.patches)}, train/val {held}), {nw} workers x batch "
        f"{batch_size}, "
        f"{cpus:g} CPU each",
        flush=True,
    )
    if data.clouds:
        print(data.clouds, flush=True)
    if data.balance:
        print(data.balance, flush=True)

    storage = storage_uri(tr.storage_path, out_dir)
    where = f"{storage}/{tr.run_name}"
    model_dict = config_to_dict(cfg.model)
    prev = previous_run_meta(storage, tr.run_name)
    if prev is not None:
        check_resumable(prev, model_dict, data.index_hash, where)
        print(f"resuming run {where} after epoch {prev.get('epoch')}", flush=True)
    worker = WorkerConfig(
        config=cfg,
        in_bands=tuple(sar_bands),
        out_bands=tuple(opt_bands),
        norm=data.norm,
        aux_bands=aux,
        git_sha=git_sha(),
        index_hash=data.index_hash,
        batch_size=batch_size,
        run_uri=where,
        cube_spec=dict(attrs.get("cube_spec") or {}),
        cubes=data.cubes,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={WORKER_KEY: worker},
        scaling_config=ScalingConfig(
            num_workers=nw,
            use_gpu=tr.use_gpu,
            resources_per_worker={"CPU": cpus, **({"GPU": 1} if tr.use_gpu else {})},
        ),
        datasets=data.datasets,
        run_config=RunConfig(
            storage_path=storage,
            name=tr.run_name,
            checkpoint_config=CheckpointConfig(
                num_to_keep=tr.num_to_keep,
                checkpoint_score_attribute=SCORE_ATTR,
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=tr.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TrainError("training finished without a checkpoint")
    best = result.get_best_checkpoint(SCORE_ATTR, "min") or result.checkpoint

    ckpt_dir = out_dir / "checkpoint"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    best.to_directory(str(ckpt_dir))

    history = result.return_value or []
    write_metrics_csv(out_dir / "metrics.csv", history)
    # a net that does not beat its own reference on the val split is not kept
    # (judged through the inference predictor on each cube's val blocks where cubes are small)
    paths = (data.cube_path,) if isinstance(data.cube_path, str) else data.cube_path
    gate_kw = {**data.read_kw, "reference_context": data.reference_context}
    # the val blocks held whole once, for the gate and the calibration (loaded on first use)
    val_scenes = SharedScenes(load_meta(ckpt_dir), paths, "val", tr.seed)
    gate = gate_checkpoint(
        ckpt_dir,
        val_batches(data.cube_path, data.index, gate_kw, tr.seed),
        cube_paths=paths, flips=cfg.infer.tta_flips, seed=tr.seed, scenes=val_scenes,
    )  # fmt: skip
    if gate:
        print(format_gate(gate), flush=True)
    # the spread of inference's hypotheses (and a scene fit's own error) -> expected |error|,
    # fitted on the val split (each cube's val blocks through the inference predictor where
    # cubes are small, else the val patches with their context reference)
    reliability = calibrate_checkpoint(
        ckpt_dir, data.cube_path, data.index, gate_kw, seed=tr.seed,
        check_flips=max(cfg.infer.tta_flips, 2), cube_paths=paths, val_scenes=val_scenes,
    )  # fmt: skip
    gen, meta = load_generator(ckpt_dir)  # what inference loads
    scores = score_checkpoint(
        gen, meta, data.cube_path, data.index, data.read_kw, index_hash=data.index_hash,
        seed=tr.seed,
    )  # fmt: skip
    if len(cubes.paths) > 1:  # each cube's own test blocks, as evaluate.py scores them
        scores["per_cube"] = {
            cube_name(p): score_checkpoint(
                gen,
                meta,
                p,
                data.index[data.index["cube"] == k].drop(columns="cube"),
                data.read_kw,
                index_hash=data.index_hash,
                seed=tr.seed,
            )  # fmt: skip
            for k, p in enumerate(cubes.paths)
        }
    scores["stopped_early"] = bool(history and history[-1].get("stopped"))
    scores["epochs_run"] = int(history[-1]["epoch"]) if history else 0
    scores["uncertainty"] = reliability
    if gate:
        scores["reference_gate"] = gate
    (out_dir / "test_scores.json").write_text(json.dumps(scores, indent=2))
    print(format_scores(scores), flush=True)
    for name, sc in scores.get("per_cube", {}).items():
        print(f"--- {name}\n{format_scores(sc)}", flush=True)
    print(
        f"=== uncertainty per decile ({reliability['split']} split, {reliability['flips']} "
        f"hypotheses, calibrated on the val split, {_as(reliability)}; "
        f"ratio = |error| / stated)\n" + format_decile_table(reliability["deciles"]),
        flush=True,
    )
    for name, rows in reliability.get("per_cube", {}).items():
        ratios = " ".join(f"{r['ratio']:.2f}" for r in rows)
        px = sum(r["pixels"] for r in rows)
        print(f"    {name}: ratio per decile {ratios} ({px} px)", flush=True)
    return ckpt_dir
