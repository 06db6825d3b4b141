"""Configuration: YAML -> frozen dataclasses, one per stage, that reject unknown keys.

Library functions take one of these specs (or explicit arguments); only ``jobs/`` sees the
whole ``Config``. ``load_config(path, overrides)`` applies ``section.key=value`` overrides
and validates every section (choices, sizes, fractions) before any work starts; this module
imports neither torch nor Ray, so a typo fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sar2opt.errors import ConfigError, first_line

# Choices of the specs' string fields. The modules that implement them import torch
# (sar2opt.models, train.step, train.schedule, data.inputs), so the names live here, where
# load_config can check them without it; tests/unit/test_grid_config_aoi.py checks that each
# registry's keys equal its tuple, and the other modules import these tuples.
GENERATOR_NAMES = ("unet", "pix2pixhd", "spade", "sardinet", "attention", "restormer")
DISCRIMINATOR_NAMES = ("patchgan", "multiscale", "none")  # none: reconstruction only
REFINER_NAMES = ("none", "restormer")
DEM_FUSIONS = ("early", "intermediate", "late")
INPUT_SET_NAMES = ("S", "SD", "SO", "SOD", "SC", "SCO", "SCOD")
REFERENCE_NAMES = ("none", "prior", "scene_fit")  # sar2opt.models.reference.REFERENCES
#: What a reference reads: the input-set letter that supplies it (O: prior, C: cloudy S2).
REFERENCE_NEEDS = {"prior": ("O", "a prior"), "scene_fit": ("C", "a same-date S2")}
RECON_LOSSES = ("l1", "mse_mae")
GAN_MODES = ("vanilla", "lsgan", "hinge")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")
#: Inference windows are multiples of this (sar2opt.infer.tiles.MULTIPLE: 5-level U-Net).
INFER_TILE_MULTIPLE = 32
#: Test-time flips per checkpoint at most (sar2opt.infer.predictor.FLIPS).
MAX_TTA_FLIPS = 4

# Where `make demo` serves the local catalog; the same setting points at Planetary Computer
# (https://planetarycomputer.microsoft.com/api/stac/v1) or Earth Search in production.
DEFAULT_STAC_URL = "http://127.0.0.1:7822"


@dataclass(frozen=True)
class CatalogSpec:
    """Where to search and which collections/assets hold the inputs."""

    stac_url: str = DEFAULT_STAC_URL
    s1_collection: str = "sentinel-1-rtc"
    s2_collection: str = "sentinel-2-l2a"
    sar_bands: tuple[str, ...] = ("vv", "vh")
    opt_bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    timeout_s: float = 20.0
    # e.g. "cop-dem-glo-30": adds a ``dem`` band (metres) after ``clear``; None = no DEM band
    dem_collection: str | None = None


@dataclass(frozen=True)
class CubeSpec:
    """How inputs are put on one grid, paired in time and cleaned."""

    res_m: float = 10.0
    epsg: int | None = None  # None: the UTM zone of the AOI centre
    max_dt_days: float = 6.0
    # Pixel cloud test (reflectance): bright and white -> cloud; very dark over land -> shadow.
    cloud_brightness: float = 0.10
    cloud_whiteness: float = 0.75
    shadow_brightness: float = 0.016
    cloud_dilate_px: int = 3
    chunk_px: int = 512
    # > 0: add ``prior_<band>`` bands: per pixel the latest clear S2 observation strictly before
    # (S1 date - max_dt_days) and at most prior_days before that; 0 = no prior bands
    prior_days: float = 0.0
    # True: add ``cloudy_<band>`` + ``cloud_mask`` bands: per pixel the nearest S2 observation
    # within ±max_dt_days, clouds included, and 1 where it is cloud/shadow/no data (the
    # cloud-removal input of SC/SCO/SCOD models)
    cloudy: bool = False
    # Tiled builds (jobs/build_cube.py): one unit of work per tile_px square tile (a multiple
    # of chunk_px, so no two tiles share a Zarr chunk); shard_tiles: one Zarr v3 shard per
    # tile and time step; cpus_per_tile: Ray CPUs per tile task (fractions are fine).
    tile_px: int = 1024
    shard_tiles: bool = False
    cpus_per_tile: float = 1.0


#: Patch sizes tried, largest first, when ``patches.patch_px`` is left unset (auto).
AUTO_PATCH_PX = (128, 64, 32)


@dataclass(frozen=True)
class PatchSpec:
    """Cloud-free training patches cut from a cube."""

    # None (auto): derived from the cube grid by sar2opt.data.index.resolve_patches: the
    # largest of AUTO_PATCH_PX whose split blocks number ~10 or more (train, val and test
    # each >= 1), so a 120 px scene trains as well as a 10 km one. Set = used as given.
    patch_px: int | None = None
    stride_px: int | None = None  # None: patch_px / 2 (auto layouts choose their own)
    min_clear_frac: float = 0.98
    val_frac: float = 0.2
    # Patch index (sar2opt.data.index): square blocks of block_px (None = 4 x patch_px) are
    # shuffled with split_seed into train / val (val_frac) / test (test_frac); a patch lies
    # inside one block and keeps gap_px (None = patch_px) from every block of another split.
    test_frac: float = 0.1
    block_px: int | None = None
    gap_px: int | None = None
    split_seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """Generator/discriminator choice by registry name and their sizes."""

    generator: str = "unet"
    discriminator: str = "patchgan"
    ngf: int = 16
    ndf: int = 16
    depth: int = 5
    # Model inputs: S (SAR), SD (+DEM), SO (+prior cloud-free optical), SOD (all); SC, SCO,
    # SCOD: + the same-date cloudy S2 with its cloud mask (cloud removal; cube.cloudy).
    input_set: str = "S"
    n_blocks: int = 6  # residual / transformer blocks (pix2pixHD, attention, Restormer)
    n_scales: int = 2  # multi-scale discriminator: image scales judged (pix2pixHD, SPADE)
    dem_fusion: str = "early"  # SARDINet: early | late | intermediate
    refine: str = "none"  # a refinement stage after the generator: none | restormer
    dropout: float = 0.0  # > 0: dropout kept on at inference gives stochastic hypotheses
    # Predict a residual over a per-pixel reference (sar2opt.models.reference): none | prior
    # (the prior clear optical; input sets with O) | scene_fit (per sample, a ridge from SAR
    # to the clear pixels of the same-date S2; input sets with C)
    reference: str = "none"


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation and Ray Train scaling."""

    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-4
    lambda_l1: float = 100.0
    loss: str = "l1"  # reconstruction term: l1 | mse_mae (w_mse * MSE + w_mae * MAE)
    w_mse: float = 1.0
    w_mae: float = 1.0
    gan_mode: str = "vanilla"  # vanilla (BCE) | lsgan | hinge
    lambda_fm: float = 10.0  # discriminator feature matching (multi-scale D only)
    d_every: int = 1  # update the discriminator every n-th step (2: every other step)
    num_workers: int = 2
    use_gpu: bool = False
    seed: int = 0
    # auto: bf16 autocast on CUDA, fp32 on CPU | bf16: also on a CPU that supports it | fp32
    precision: str = "auto"
    channels_last: bool = False  # NHWC tensors: faster convolutions on recent GPUs
    grad_clip: float = 0.0  # max gradient norm of G and of D per step; 0 = off
    lr_schedule: str = "constant"  # constant | cosine (decay after warmup_epochs linear ramp)
    warmup_epochs: int = 0
    patience: int = 0  # early stopping: epochs without val MAE improving by min_delta; 0 = off
    min_delta: float = 0.0  # reflectance units
    # CPUs each Train worker holds; 0 = auto (leave some for Ray Data's read tasks, which
    # otherwise starve on a small node). Fractions are fine.
    cpus_per_worker: float = 0.0
    # Open each epoch's data stream while the previous epoch validates and saves (false: at
    # the start of the epoch's training pass, which then waits Ray Data's start-up).
    open_ahead: bool = True
    max_failures: int = 1  # worker-group restarts from the latest checkpoint before giving up
    # Ray Train storage (local path or s3://...); None = <out>/ray_results. A re-run with the
    # same storage_path and run_name resumes from the run's latest checkpoint.
    storage_path: str | None = None
    run_name: str = "train"
    num_to_keep: int = 2  # checkpoints kept, best val MAE first (the latest is always kept)
    # With model.reference: scene_fit, each training patch's reference is fitted over a window
    # of this side around it, as inference fits it over its tile (data.stream.ReferenceContext);
    # None = infer.tile_px, 0 = the patch alone (reference_context_px()).
    reference_context_px: int | None = None
    # Several cubes: each cube's share of an epoch goes as (its train patches) ** cube_balance
    # (1 = as indexed, 0.5 = square root, 0 = equal), smaller cubes' patches repeated
    # (data.index.balance_cubes).
    cube_balance: float = 1.0


@dataclass(frozen=True)
class InferSpec:
    """Tiling and the Ray Data actor pool."""

    tile_px: int = 256
    overlap_px: int = 64  # 32 px context a side: windows start on the 5-level U-Net lattice
    batch_size: int = 4
    num_actors: int = 1
    # Ray CPUs per actor (under 2: one torch thread, OMP_NUM_THREADS). Its strip threads read and
    # write beside the forward, so it really uses ~1.3 cores here (more on a GPU node).
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    # Neighbouring blocks of a block row per task (one read per asset) and per shard of a new
    # store (one file); a store keeps the shard width it was created with.
    read_blocks: int = 8
    # Strips one actor works on at once (threads: one predicts, the others read or write).
    calls_per_actor: int = 3
    # Custom Ray resources each actor requests, e.g. {infer_node: 1} with `ray start
    # --resources='{"infer_node": 4}'` on the nodes meant for inference (CPU/GPU: the keys above).
    actor_resources: dict[str, float] = field(default_factory=dict)
    # Hypotheses per tile = checkpoints x test-time flips (1-4); their spread is `uncertainty`.
    tta_flips: int = 2
    # Cloud-free composite: keep a clear S2 pixel within +-days of each S1 date; in a period
    # mosaic, the clear S2 pixels inside the period (any day of it). On by default: 6 days is
    # half the S1 revisit, so every S2 pass meets its nearest S1 date. 0 = synthesis everywhere.
    composite_max_dt_days: float = 6.0
    # Output time steps: one per S1 acquisition ("acquisition"), or one per period ("12D", "2W",
    # "1M", "1Y"; infer.periods), or the periods between explicit `period_edges` (dates).
    period: str = "acquisition"
    period_edges: tuple[str, ...] = ()
    # Dry-run estimates only: GPU throughput, and S1/S2 revisits when the catalog is silent.
    gpu_tiles_per_s: float = 50.0
    s1_revisit_days: float = 12.0
    s2_revisit_days: float = 5.0


@dataclass(frozen=True)
class Config:
    catalog: CatalogSpec = field(default_factory=CatalogSpec)
    cube: CubeSpec = field(default_factory=CubeSpec)
    patches: PatchSpec = field(default_factory=PatchSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    infer: InferSpec = field(default_factory=InferSpec)


def _coerce(value: object, tp: object, where: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            _coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2023-07-01 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: object, where: str) -> object:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where or 'config'}; allowed: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


#: Keys earlier versions had, by section: what replaced them.
RETIRED_KEYS: dict[str, dict[str, str]] = {
    "infer": {"inflight_mb": "actors bound their own memory now (infer.calls_per_actor)"},
}


def config_from_dict(data: dict | None, *, saved: bool = False) -> Config:
    """Build a Config, rejecting unknown sections and keys.

    ``saved``: the config stored in a checkpoint or store by an earlier version, whose
    retired keys (``RETIRED_KEYS``) are dropped; in a config a person wrote they are an error
    that says what replaced them. A config a person wrote is also validated
    (:func:`validate_config`); a saved one is a record, read as it was written."""
    data = dict(data or {})
    for section, keys in RETIRED_KEYS.items():
        old = [k for k in keys if isinstance(data.get(section), dict) and k in data[section]]
        if old and not saved:
            why = "; ".join(f"{section}.{k} was removed: {keys[k]}" for k in old)
            raise ConfigError(why)
        if old:
            data[section] = {k: v for k, v in data[section].items() if k not in keys}
    cfg = _build(Config, data, "")
    return cfg if saved else validate_config(cfg)


# --- validation: every spec checked at load time, so a typo fails before any work ----------


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {key} {value!r}; choices: {', '.join(allowed)}")


def _at_least(spec: object, section: str, minimum: float, *names: str) -> None:
    for name in names:
        v = getattr(spec, name)
        if v is not None and v < minimum:
            raise ConfigError(f"{section}.{name} must be >= {minimum:g}, got {v}")


def _positive(spec: object, section: str, *names: str) -> None:
    for name in names:
        v = getattr(spec, name)
        if v is not None and not v > 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {v}")


def _fraction(spec: object, section: str, *names: str) -> None:
    for name in names:
        v = getattr(spec, name)
        if not 0 <= v <= 1:
            raise ConfigError(f"{section}.{name} must be in [0, 1], got {v}")


def check_catalog(spec: CatalogSpec) -> None:
    """Non-empty URL, collections and band lists; a positive timeout."""
    for name in ("stac_url", "s1_collection", "s2_collection", "sar_bands", "opt_bands"):
        if not getattr(spec, name):
            raise ConfigError(f"catalog.{name} must not be empty")
    _positive(spec, "catalog", "timeout_s")


def check_cube(spec: CubeSpec) -> None:
    """Positive sizes, thresholds in range; tiles own whole chunks."""
    _positive(spec, "cube", "res_m", "epsg", "chunk_px", "tile_px", "cpus_per_tile")
    _at_least(spec, "cube", 0, "max_dt_days", "shadow_brightness", "cloud_dilate_px")
    _at_least(spec, "cube", 0, "prior_days")
    _fraction(spec, "cube", "cloud_brightness", "cloud_whiteness")
    if spec.tile_px % spec.chunk_px:
        raise ConfigError(
            f"cube.tile_px ({spec.tile_px}) must be a positive multiple of cube.chunk_px "
            f"({spec.chunk_px}) so that no two tiles write one Zarr chunk"
        )


def check_patches(spec: PatchSpec) -> None:
    """Positive sizes, fractions that leave a training split, blocks that hold a patch."""
    _positive(spec, "patches", "patch_px", "stride_px")
    _fraction(spec, "patches", "min_clear_frac", "val_frac", "test_frac")
    if spec.val_frac + spec.test_frac >= 1:
        raise ConfigError(
            "patches.val_frac + patches.test_frac must be < 1 (the rest trains), got "
            f"{spec.val_frac} + {spec.test_frac}"
        )
    smallest = spec.patch_px if spec.patch_px is not None else min(AUTO_PATCH_PX)
    if spec.block_px is not None and spec.block_px < smallest:
        what = spec.patch_px if spec.patch_px is not None else f"auto, {smallest} at the least"
        raise ConfigError(
            f"patches.block_px ({spec.block_px}) must be at least patches.patch_px ({what})"
        )
    _at_least(spec, "patches", 0, "gap_px")


def check_model(spec: ModelSpec) -> None:
    """Registry names, positive sizes, and a reference the input set can supply."""
    _choice("model.generator", spec.generator, GENERATOR_NAMES)
    _choice("model.discriminator", spec.discriminator, DISCRIMINATOR_NAMES)
    _choice("model.refine", spec.refine, REFINER_NAMES)
    _choice("model.dem_fusion", spec.dem_fusion, DEM_FUSIONS)
    _choice("model.input_set", spec.input_set, INPUT_SET_NAMES)
    _choice("model.reference", spec.reference, REFERENCE_NAMES)
    if spec.reference in REFERENCE_NEEDS:
        letter, what = REFERENCE_NEEDS[spec.reference]
        if letter not in spec.input_set:
            sets = [s for s in INPUT_SET_NAMES if letter in s]
            raise ConfigError(
                f"model.reference={spec.reference} reads {what}, which input set "
                f"{spec.input_set} lacks: use model.input_set {', '.join(sets[:-1])} or {sets[-1]}"
            )
    _at_least(spec, "model", 1, "ngf", "ndf", "depth", "n_blocks", "n_scales")
    if not 0 <= spec.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {spec.dropout}")


def check_train(spec: TrainSpec) -> None:
    """Loss, GAN mode, schedule and precision names; counts and weights in range."""
    _choice("train.loss", spec.loss, RECON_LOSSES)
    _choice("train.gan_mode", spec.gan_mode, GAN_MODES)
    _choice("train.lr_schedule", spec.lr_schedule, LR_SCHEDULES)
    _choice("train.precision", spec.precision, PRECISIONS)
    _at_least(spec, "train", 1, "epochs", "batch_size", "d_every", "num_workers", "num_to_keep")
    _at_least(spec, "train", 0, "lr", "lambda_l1", "w_mse", "w_mae", "lambda_fm", "grad_clip")
    _at_least(spec, "train", 0, "warmup_epochs", "patience", "min_delta", "cpus_per_worker")
    _at_least(spec, "train", -1, "max_failures")  # -1: Ray retries forever
    if not spec.run_name:
        raise ConfigError("train.run_name must not be empty")
    if not 0 <= spec.cube_balance <= 1:
        raise ConfigError(f"train.cube_balance must be in [0, 1], got {spec.cube_balance}")
    if spec.reference_context_px is not None and spec.reference_context_px < 0:
        raise ConfigError(
            f"train.reference_context_px must be >= 0 (or unset), got {spec.reference_context_px}"
        )


def reference_context_px(cfg: Config) -> int:
    """Side (px) of the window each training patch's scene-fit reference is fitted over: 0
    (the patch alone) unless ``model.reference`` is ``scene_fit``; unset, the inference tile."""
    if cfg.model.reference != "scene_fit":
        return 0
    side = cfg.train.reference_context_px
    return cfg.infer.tile_px if side is None else side


def check_infer(spec: InferSpec) -> None:
    """Windows on the generator's lattice; counts that keep the actor pool moving."""
    if spec.tile_px <= 0 or spec.tile_px % INFER_TILE_MULTIPLE:
        raise ConfigError(
            f"infer.tile_px must be a positive multiple of {INFER_TILE_MULTIPLE}, got "
            f"{spec.tile_px}"
        )
    if not 0 <= spec.overlap_px < spec.tile_px:
        raise ConfigError(f"infer.overlap_px must be in [0, tile_px), got {spec.overlap_px}")
    _at_least(spec, "infer", 1, "batch_size", "num_actors", "read_blocks", "calls_per_actor")
    _at_least(spec, "infer", 0, "cpus_per_actor", "gpus_per_actor", "composite_max_dt_days")
    _positive(spec, "infer", "gpu_tiles_per_s", "s1_revisit_days", "s2_revisit_days")
    if not 1 <= spec.tta_flips <= MAX_TTA_FLIPS:
        raise ConfigError(f"infer.tta_flips must be in 1..{MAX_TTA_FLIPS}, got {spec.tta_flips}")
    from sar2opt.infer.periods import parse_period

    parse_period(spec.period, spec.period_edges)  # PeriodError (a ConfigError) names the value
    for name, amount in spec.actor_resources.items():
        if not name or name in ("CPU", "GPU", "memory"):
            raise ConfigError(
                f"infer.actor_resources: {name!r} is not a custom resource name "
                "(CPUs and GPUs: infer.cpus_per_actor, infer.gpus_per_actor)"
            )
        if not amount > 0:
            raise ConfigError(f"infer.actor_resources.{name} must be > 0, got {amount}")


def validate_config(cfg: Config) -> Config:
    """Check every section (ConfigError naming the key and what it allows); return ``cfg``."""
    check_catalog(cfg.catalog)
    check_cube(cfg.cube)
    check_patches(cfg.patches)
    check_model(cfg.model)
    check_train(cfg.train)
    check_infer(cfg.infer)
    return cfg


def _set_path(data: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {k} is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:  # e.g. a Python tag: safe_load refuses it, say so in one line
        raise ConfigError(f"override {dotted}: value is not valid YAML: {first_line(e)}") from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML config (safe_load) and apply ``section.key=value`` overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config {p} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {p} must be a mapping of sections")
        data = loaded or {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not section.key=value")
        k, v = ov.split("=", 1)
        _set_path(data, k.strip(), v)
    return config_from_dict(data)


def config_to_dict(cfg: object) -> dict:
    """Plain dict (lists, not tuples) for YAML, JSON and Zarr attrs."""

    def plain(v: object) -> object:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
