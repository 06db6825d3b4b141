"""The generator on a batch of tiles, and the checkpoint ensemble it runs.

``load_models`` reads what the checkpoints of an ensemble agree on from their metadata (no
generator built): bands, input set, the statistics each input needs and the training cube's
rules for the prior and the same-date S2; ``TilePredictor`` loads them, once per actor
(``run.StripWorker``), and turns the tiles of every input the input set reads (``sar``,
``cloudy``, ``prior``, ``dem``, in physical units) into the model's input exactly as training
did (``model_inputs``).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sar2opt.config import CubeSpec
from sar2opt.data.inputs import (
    INPUT_SETS,
    REF_FIT_KEY,
    REF_KEY,
    input_keys,
    model_inputs,
    norm_keys,
)
from sar2opt.errors import ConfigError
from sar2opt.infer.calibration import CALIBRATION_KEY, calibrated, describe, knots_for
from sar2opt.infer.tiles import MULTIPLE, round_up

#: When this module (and torch with it) was imported (epoch s): ``run.StripWorker``'s stamps.
IMPORTED_AT = time.time()

#: Model input sets the inference reads: every one training knows (``data.inputs``).
INFER_INPUT_SETS: tuple[str, ...] = tuple(INPUT_SETS)

#: Every input key of every input set (a predictor's output drops them).
INPUT_KEYS = frozenset(k for keys in INPUT_SETS.values() for k in keys)

#: Test-time flips over (H, W) axes of a (B, C, H, W) batch: each one is a hypothesis.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass(frozen=True)
class Models:
    """The checkpoints of an ensemble and what they agree on."""

    checkpoints: tuple[str, ...]
    sha256: tuple[str, ...]
    in_bands: tuple[str, ...]
    out_bands: tuple[str, ...]
    model: dict
    git_sha: str | None
    input_set: str = "S"
    #: The training cube's ``CubeSpec``: the prior and same-date windows and the cloud test
    #: (``input_rule``).
    rule: CubeSpec = CubeSpec()
    #: The one checkpoint's ``uncertainty_calibration`` (an ensemble's spread also holds the
    #: members' disagreement, which no member was calibrated on: none).
    calibration: tuple[dict, ...] = ()

    def uncertainty_calibration(self, flips: int) -> str:
        """What the ``uncertainty`` band of a run with ``flips`` test-time flips is
        (``calibration.describe``): calibrated, or "uncalibrated"."""
        return describe(knots_for({CALIBRATION_KEY: self.calibration}, flips))


def checkpoint_input_set(meta: Mapping) -> str:
    """The input set a checkpoint was trained on (S for checkpoints older than input sets)."""
    return meta.get("input_set") or (meta.get("model") or {}).get("input_set") or "S"


#: The cube settings that make the prior and the same-date cloudy S2: their windows and the
#: cloud test of their S2 pixels.
PRIOR_RULE = (
    "max_dt_days", "prior_days", "cloud_brightness", "cloud_whiteness", "shadow_brightness",
    "cloud_dilate_px",
)  # fmt: skip


def input_rule(meta: Mapping) -> CubeSpec:
    """A ``CubeSpec`` with the ``PRIOR_RULE`` settings of the cube a checkpoint was trained
    on (its ``cube_spec``; checkpoints older than it: the training config's ``cube``), the
    rest default: how inference makes the prior and the same-date S2 the model saw."""
    d = _cube_settings(meta)
    return CubeSpec(**{k: d[k] for k in PRIOR_RULE if k in d})


def _cube_settings(meta: Mapping) -> Mapping:
    return meta.get("cube_spec") or (meta.get("config") or {}).get("cube") or {}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, so a mosaic names the exact weights that produced it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_models(checkpoints: Sequence[str | Path]) -> Models:
    """Read every checkpoint's metadata (fail fast on a missing or unusable one) and check
    they share bands; no generator is built here (the actors do that)."""
    from sar2opt.train import checkpoint

    metas = []
    for c in checkpoints:
        meta = checkpoint.load_meta(c)
        input_set = checkpoint_input_set(meta)
        if input_set not in INFER_INPUT_SETS:
            raise ConfigError(
                f"checkpoint {c} was trained on input set {input_set}; inference supports "
                f"{', '.join(INFER_INPUT_SETS)}"
            )
        missing = [k for k in norm_keys(input_set) if k not in (meta.get("norm") or {})]
        if missing:
            raise checkpoint.CheckpointError(
                f"checkpoint {c} (input set {input_set}) lacks the normalisation "
                f"{', '.join('norm.' + k for k in missing)}"
            )
        if "prior" in input_keys(input_set) and input_rule(meta).prior_days <= 0:
            raise checkpoint.CheckpointError(
                f"checkpoint {c} (input set {input_set}) does not record the prior window "
                "of its training cube (cube_spec.prior_days)"
            )
        if "cloudy" in input_keys(input_set) and "max_dt_days" not in _cube_settings(meta):
            raise checkpoint.CheckpointError(
                f"checkpoint {c} (input set {input_set}) does not record the same-date S2 "
                "window of its training cube (cube_spec.max_dt_days)"
            )
        metas.append(meta)
    m0 = metas[0]
    set0 = checkpoint_input_set(m0)
    for c, m in zip(checkpoints, metas, strict=True):
        if list(m["in_bands"]) != list(m0["in_bands"]) or list(m["out_bands"]) != list(
            m0["out_bands"]
        ):
            raise ConfigError(f"checkpoint {c} has other bands than {checkpoints[0]}")
        if checkpoint_input_set(m) != set0:
            raise ConfigError(
                f"checkpoint {c} was trained on input set {checkpoint_input_set(m)}, "
                f"{checkpoints[0]} on {set0}: an ensemble reads one input set"
            )
        if {"prior", "cloudy"} & set(input_keys(set0)) and input_rule(m) != input_rule(m0):
            raise ConfigError(
                f"checkpoint {c} was trained on a prior or same-date S2 made by other cube "
                f"settings than {checkpoints[0]}'s (cube_spec): an ensemble reads one of each"
            )
    return Models(
        tuple(str(Path(c).resolve()) for c in checkpoints),
        tuple(sha256_file(Path(c) / checkpoint.MODEL_FILE) for c in checkpoints),
        tuple(m0["in_bands"]),
        tuple(m0["out_bands"]),
        dict(m0.get("model") or {}),
        m0.get("git_sha"),
        set0,
        input_rule(m0),
        tuple(m0.get(CALIBRATION_KEY) or ()) if len(metas) == 1 else (),
    )


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when this process can see a GPU (Ray sets that per actor), else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _col(values: Sequence[float], n: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size != n:
        raise ValueError(f"{what} has {v.size} values for {n} bands")
    return v.reshape(1, n, 1, 1)


def model_stride(model: torch.nn.Module) -> int:
    """H and W the generator needs multiples of: its ``stride`` (2**depth for a U-Net, 256 for
    the 8-level pix2pix), else ``MULTIPLE`` for plain nets without one (a bare ``Conv2d``'s
    ``stride`` is a tuple of its own and does not count)."""
    stride = getattr(model, "stride", None)
    return int(stride) if isinstance(stride, int) and stride > 0 else MULTIPLE


def normalise(
    sar_db: np.ndarray, norm: Mapping[str, Sequence[float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised SAR (B, Cs, H, W), NaN -> 0 (the band mean), and valid (B, H, W)."""
    return model_inputs({"sar": sar_db}, norm, "S")


def forward(
    model: torch.nn.Module,
    x: np.ndarray,
    device: torch.device | str = "cpu",
    lock: AbstractContextManager | None = None,
    ref: np.ndarray | None = None,
) -> torch.Tensor:
    """Generator on normalised (B, C, H, W): reflect padded to the model's stride, cropped
    back; the normalised output (B, Co, H, W) float32 on the CPU, contiguous.

    The input goes in channels-last (NHWC): with a model converted by ``for_inference``
    oneDNN's convolutions run ~1.6x faster on CPU (the U-Net's transposed convolutions most)
    and cuDNN's use tensor cores. ``lock`` is held for the model call only (padding and
    copies run outside it, beside another thread's forward). ``ref``: the reference of a
    ``ReferenceGenerator`` (B, Co, H, W), standardised, when the caller fitted it over more
    than the window (``TilePredictor.reference_fields``); padded as x is."""
    device = torch.device(device)
    h, w = x.shape[-2:]
    stride = model_stride(model)
    ph, pw = round_up(h, stride) - h, round_up(w, stride) - w
    arrays = [x] if ref is None else [x, ref]
    if ph or pw:
        arrays = [np.pad(a, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect") for a in arrays]
    xt, *rt = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)
    xt = xt.contiguous(memory_format=torch.channels_last)
    kw = {REF_KEY: rt[0].contiguous(memory_format=torch.channels_last)} if rt else {}
    with torch.inference_mode(), lock or nullcontext():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yt = model(xt, **kw)
        else:
            yt = model(xt, **kw)
    return yt.float().cpu()[:, :, :h, :w].contiguous()


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with channels-last weights (what ``forward`` feeds it)."""
    return model.eval().to(memory_format=torch.channels_last)


def denormalise(y: torch.Tensor, norm: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """Normalised optical (B, Co, H, W) tensor -> reflectance."""
    co = y.shape[1]
    std = torch.from_numpy(_col(norm["opt_std"], co, "opt_std"))
    mean = torch.from_numpy(_col(norm["opt_mean"], co, "opt_mean"))
    return torch.addcmul(mean, y, std)


def predict(
    model: torch.nn.Module,
    sar_db: np.ndarray,
    norm: Mapping[str, Sequence[float]],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Normalised generator forward pass on dB SAR (B, Cs, H, W) -> optical (B, Co, H, W).

    NaN SAR (no data) becomes the band mean (0 after normalising) so the net sees a neutral
    value, and the output is NaN wherever any SAR band was missing. H and W are reflect
    padded to multiples of the model's ``stride`` and cropped back.
    """
    x, valid = normalise(sar_db, norm)
    y = denormalise(forward(model, x, device), norm).numpy()
    return np.where(valid[:, None], y, np.nan).astype(np.float32)


def flip(a: np.ndarray | None, axes: tuple[int, ...]) -> np.ndarray | None:
    """``a`` flipped along ``axes`` (a view; None stays None): one test-time flip."""
    return np.flip(a, axes) if axes and a is not None else a


class TilePredictor:
    """Ray Data ``map_batches`` UDF: the generator of one checkpoint, loaded once per actor.

    Input batch: ``sar`` (B, Cs, H, W) dB with NaN, and for the other input sets ``cloudy``
    (B, Co + 1, H, W) reflectance and cloud mask, ``prior`` (B, Co, H, W) reflectance and/or
    ``dem`` (B, 1, H, W) metres, with NaN; plus any per-tile
    keys (``t``, ``row``, ``col``...). Output: the same keys without the inputs, plus
    ``pred`` (B, Co, H, W) float32 in reflectance, NaN where the SAR (or DEM) was missing,
    ``spread`` and ``uncertainty`` (B, H, W) (``__call__``) and ``valid`` (B, H, W) bool
    (``model_inputs``).

    Calls from several threads are safe and overlap: one model call runs at a time (the
    ``lock``: the actor's core or GPU), while normalising, flips and the hypothesis
    statistics of other batches run beside it.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | Sequence[str | Path],
        device: str = "auto",
        flips: int = 1,
    ) -> None:
        from sar2opt.train.checkpoint import load_generator

        self.device = resolve_device(device)
        dirs = [checkpoint_dir] if isinstance(checkpoint_dir, (str, Path)) else checkpoint_dir
        loaded = [load_generator(d, device=str(self.device)) for d in dirs]
        self._setup(loaded[0][0], loaded[0][1], extra=loaded[1:], flips=flips)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, meta: Mapping, device: str = "cpu", flips: int = 1
    ) -> TilePredictor:
        """Wrap an in-memory generator (tests, notebooks) without a checkpoint on disk."""
        self = cls.__new__(cls)
        self.device = resolve_device(device)
        self._setup(model.to(self.device).eval(), meta, flips=flips)
        return self

    def _setup(
        self,
        model: torch.nn.Module,
        meta: Mapping,
        extra: Sequence[tuple[torch.nn.Module, Mapping]] = (),
        flips: int = 1,
    ) -> None:
        """Hypotheses = each (model, meta) x the first ``flips`` of ``FLIPS``."""
        if not 1 <= flips <= len(FLIPS):
            raise ValueError(f"flips must be in 1..{len(FLIPS)}, got {flips}")
        model = for_inference(model)
        extra = [(for_inference(m), mt) for m, mt in extra]
        self.model = model
        self.meta = dict(meta)
        self.norm = {k: list(v) for k, v in meta["norm"].items()}
        self.in_bands = list(meta["in_bands"])
        self.out_bands = list(meta["out_bands"])
        self.input_set = checkpoint_input_set(meta)
        self.members = [(model, self.norm)]
        for m, mt in extra:
            if list(mt["in_bands"]) != self.in_bands or list(mt["out_bands"]) != self.out_bands:
                raise ValueError("ensemble checkpoints must share in_bands and out_bands")
            if checkpoint_input_set(mt) != self.input_set:
                raise ValueError("ensemble checkpoints must share their input set")
            self.members.append((m, {k: list(v) for k, v in mt["norm"].items()}))
        self.flips = flips
        # the spread -> expected |error| map fitted after training (calibration module);
        # none for older checkpoints and ensembles: ``uncertainty`` is then the raw spread
        self.calibration = None if extra else knots_for(meta, flips)
        self.lock = threading.Lock()

    @property
    def hypotheses(self) -> int:
        return len(self.members) * self.flips

    def __call__(
        self, batch: dict[str, np.ndarray], keep_hypotheses: bool = False
    ) -> dict[str, np.ndarray]:
        """Every hypothesis on the batch: ``pred`` (their mean), ``spread`` (their std,
        band mean; NaN with one hypothesis) and ``uncertainty`` (the expected |error|, band
        mean, from the checkpoint's calibration of the spread; the spread itself without
        one), all NaN where any SAR band is missing. ``keep_hypotheses``: each of them too,
        ``hypotheses`` (N, B, C, H, W) reflectance (every member x its flips; the MultiEarth
        best-of-N score reads them), from the same forwards."""
        with torch.inference_mode():  # the statistics update the forward's outputs in place
            return self._hypotheses(batch, [] if keep_hypotheses else None)

    def _hypotheses(
        self, batch: dict[str, np.ndarray], keep: list | None = None
    ) -> dict[str, np.ndarray]:
        input_set = getattr(self, "input_set", "S")
        keys = input_keys(input_set)
        out = {k: v for k, v in batch.items() if k not in INPUT_KEYS}
        members = getattr(self, "members", [(self.model, self.norm)])
        out.pop(REF_KEY, None)
        out.pop(REF_FIT_KEY, None)
        inputs = []
        for m, (model, norm) in enumerate(members):
            x, valid = model_inputs({k: batch[k] for k in keys}, norm, input_set)
            ref, fit = (batch[k][:, m] if k in batch else None for k in (REF_KEY, REF_FIT_KEY))
            inputs.append((model, norm, x, ref, fit))
        return out | self._fold(inputs, valid, keep=keep)

    def reference_fields(
        self,
        inputs: Mapping[str, np.ndarray],
        windows: Sequence[Sequence[tuple[int, int, int, int]]],
        centres_y: Sequence[float],
        centres_x: Sequence[float],
    ) -> dict[str, np.ndarray] | None:
        """Per member, the scene-fit reference over an area holding a lattice of block
        ``windows`` (``inputs``: the input set's keys, (1, c, H, W) in physical units),
        blended between the blocks' fits (``ReferenceGenerator.reference_field``): batch
        keys ``ref`` and ``ref_fit`` (the fit it spreads its residual over, whose error the
        uncertainty checks), each (M, Co, H, W) float32, standardised by each member's norm.
        Cut each window's part of both (B, M, Co, h, w). None when no member has a scene-fit
        reference (nothing to blend: each window's own reference is computed from it)."""
        members = getattr(self, "members", [(self.model, self.norm)])
        if not any(getattr(m, "kind", None) == "scene_fit" for m, _ in members):
            return None
        fields: dict[str, list[np.ndarray]] = {REF_FIT_KEY: [], REF_KEY: []}
        for model, norm in members:
            x, _ = model_inputs({k: inputs[k] for k in input_keys(self.input_set)}, norm,
                                self.input_set)  # fmt: skip
            xt = torch.from_numpy(x).to(self.device)
            with torch.inference_mode():
                parts = model.reference_field(xt, windows, centres_y, centres_x)
            for key, f in zip(fields, parts, strict=True):
                fields[key].append(f[0].float().cpu().numpy())
        return {key: np.stack(v) for key, v in fields.items()}

    def predict_normalised(
        self,
        x: np.ndarray,
        valid: np.ndarray | None = None,
        ref: np.ndarray | None = None,
        ref_err: np.ndarray | None = None,
    ) -> dict:
        """Every hypothesis of a one-checkpoint predictor on inputs already normalised as
        the model takes them ((B, C, H, W), e.g. ``data.inputs.model_input`` of training's
        patches): ``pred``, ``spread``, ``raw_uncertainty``, ``uncertainty`` and ``valid``
        as ``__call__`` gives them (the training job fits the calibration on exactly these);
        ``ref``: a reference fitted over more than the patch (the training stream's context
        reference, batch key ``ref``), as inference fits it over its window, and ``ref_err``
        its error over that context (``ref_err``), else taken over the patch."""
        if len(getattr(self, "members", ())) > 1:
            raise ValueError("predict_normalised takes one checkpoint's normalised inputs")
        x = np.asarray(x, np.float32)
        if valid is None:
            valid = np.ones((x.shape[0], *x.shape[2:]), bool)
        with torch.inference_mode():
            given = None if ref is None else np.asarray(ref, np.float32)
            member = (self.model, self.norm, x, given, None)
            return self._fold([member], np.asarray(valid, bool), ref_err)

    def _fold(
        self,
        inputs: Sequence[tuple],
        valid: np.ndarray,
        ref_err: np.ndarray | None = None,
        keep: list | None = None,
    ) -> dict[str, np.ndarray]:
        """``pred``, ``spread``, ``raw_uncertainty``, ``uncertainty`` and ``valid`` from each
        member's ``(model, norm, normalised input, reference, its fit)`` (None: not given), over the
        predictor's flips (``ref_err``: one member's reference error, if given); with a
        ``keep`` list, each hypothesis in reflectance too (``hypotheses``)."""
        # Running sums of each hypothesis minus the first one: mean and population std in
        # a few in-place passes, without stacking the hypotheses, and without the
        # cancellation of E[y^2] - E[y]^2 in float32. One checkpoint: in its normalised
        # space, scaled to reflectance once at the end (std scales by opt_std); an ensemble
        # (norms differ): in reflectance.
        single = len(inputs) == 1
        inputs = [self.with_reference(*member, need_fit=ref_err is None) for member in inputs]
        ref = acc = acc2 = None
        n = 0
        for model, norm, x, given, _ in inputs:
            for axes in FLIPS[: getattr(self, "flips", 1)]:
                y = forward(
                    model,
                    flip(x, axes),
                    self.device,
                    getattr(self, "lock", None),
                    flip(given, axes),
                )
                y = torch.flip(y, axes) if axes else y
                y = y if single else denormalise(y, norm)
                if keep is not None:  # before the statistics update y in place
                    keep.append(denormalise(y, norm) if single else y.clone())
                n += 1
                if ref is None:
                    ref = y
                elif acc is None:
                    acc = y.sub_(ref)
                    acc2 = acc.square()
                else:
                    d = y.sub_(ref)
                    acc.add_(d)
                    acc2.addcmul_(d, d)
        if n < 2:
            mean = ref
            spread = torch.full((ref.shape[0], *ref.shape[2:]), float("nan"))
        else:
            acc.div_(n)
            mean = ref.add_(acc)
            sd = acc2.div_(n).sub_(acc.square_()).clamp_(min=0).sqrt_()
            if single:
                sd.mul_(torch.from_numpy(_col(self.norm["opt_std"], sd.shape[1], "opt_std")))
            spread = sd.mean(dim=1)
        if single:
            mean = denormalise(mean, self.norm)
        invalid = torch.from_numpy(~valid)
        mean = mean.masked_fill_(invalid[:, None], float("nan"))
        spread = spread.masked_fill_(invalid, float("nan"))
        out = {"pred": mean.numpy(), "spread": spread.numpy(), "valid": valid}
        if keep is not None:
            out["hypotheses"] = torch.stack(keep).masked_fill_(invalid[:, None], math.nan).numpy()
        r = self._reference_error(inputs, ref_err)
        # the spread, and where the models have a scene fit its own error beside it
        raw = out["spread"] if r is None else np.where(np.isfinite(r), np.hypot(out["spread"], r),
                                                       out["spread"])  # fmt: skip
        out["raw_uncertainty"] = raw.astype(np.float32, copy=False)
        knots = getattr(self, "calibration", None)
        out["uncertainty"] = (
            out["raw_uncertainty"]
            if knots is None
            else calibrated(knots, out["spread"], out["raw_uncertainty"])
        )
        return out

    def with_reference(
        self,
        model: torch.nn.Module,
        norm: Mapping,
        x: np.ndarray,
        given: np.ndarray | None,
        fit: np.ndarray | None = None,
        need_fit: bool = True,
    ) -> tuple:
        """``(model, norm, x, reference, fit)`` of a member: a scene-fit member's reference
        and the fit under it (``models.reference.scene_reference``) made once on its window,
        unless given. Each flip takes that reference, the reference error that fit, not a
        refit per flip on the input reflect-padded to the model's stride (where the
        padding's copies of the edge pixels entered the fit). ``need_fit`` False: the
        caller has the reference's error already."""
        done = given is not None and (fit is not None or not need_fit)
        if getattr(model, "kind", None) != "scene_fit" or done:
            return model, norm, x, given, fit
        from sar2opt.models.reference import scene_reference

        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            own = [a.float().cpu().numpy() for a in scene_reference(xt, model.slices)]
        # a reference given without its fit (training's context reference, whose error the
        # caller gives too): the window's own fit checks it
        return model, norm, x, own[1] if given is None else given, own[0]

    def _reference_error(
        self, inputs: Sequence[tuple], given_err: np.ndarray | None = None
    ) -> np.ndarray | None:
        """(B, H, W) reflectance, band mean, members' mean: how far each scene-fit member's
        reference is off on the clear same-date S2 around each pixel
        (``models.reference.reference_error``: ``given_err``, else over the window, of the
        member's fit, ``with_reference``); None when no member has a scene fit."""
        from sar2opt.models.reference import reference_error

        errs = []
        for model, norm, x, _, fit in inputs:
            if getattr(model, "kind", None) != "scene_fit":
                continue
            if given_err is not None:
                e = torch.from_numpy(np.asarray(given_err, np.float32))
            else:
                with torch.inference_mode():
                    xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
                    e = reference_error(xt, torch.from_numpy(fit).to(xt), model.slices).cpu()
            std = torch.from_numpy(_col(norm["opt_std"], e.shape[1], "opt_std"))
            errs.append((e * std).mean(dim=1).numpy())  # not in place: e may be the caller's
        return None if not errs else np.mean(errs, axis=0)
