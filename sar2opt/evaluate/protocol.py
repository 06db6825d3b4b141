"""Spatially held-out scoring over several seeds: block splits, methods, mean ± std.

Random pixel splits flatter every model (a held-out pixel's neighbour was in training), so
the region is cut into square blocks and a random subset of whole blocks is held out; a
``buffer_px`` ring around them is kept out of training too. Each seed draws other blocks.
The same held-out pixels are scored for every method, at every date of the cube.

Within-scene protocol: methods that fit per date (``per_date``) learn from the training
blocks of that same acquisition and fill its held-out blocks - the operational case where
clear areas of a scene teach and cloudy ones are filled.

Cloud-removal protocol (``CloudLaySpec``): a model that reads the same-date cloudy S2 would
copy it at a clear held-out pixel, so held-out blocks say nothing about it. Instead, for each
seed, the real cloud mask of one cloudy date of the cube is laid onto each clear date
(``lay_clouds``, through the training stream's ``lay_cloud_masks``): that date's cloudy
input gets those pixels masked, every method is scored under the laid mask only, and the
per-date baselines are fitted on every pixel of the date outside it: the same information
the cloud-removal model gets (the laid masks are the cube's own, already dilated by
``cube.cloud_dilate_px``, so the pixels next to them are what inference sees next to a real
cloud). An 8-px ring kept out of the baselines' fits alone, as held-out blocks keep one
(commits before 2026-12-03), denied them the nearest evidence the model reads: on the real
MultiEarth test blocks the per-date ridge erred 0.0105 with it, 0.0065 without.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from sar2opt.evaluate.baselines import constant_colour, fit_sar_ridge
from sar2opt.evaluate.metrics import mae, masked_ssim_map, psnr, rmse, sam_deg
from sar2opt.evaluate.reliability import ReliabilityRow, pixel_groups, reliability_table
from sar2opt.ops import dilate

if TYPE_CHECKING:  # typing only: infer.run pulls in the inference stack
    from sar2opt.infer.run import FitLattice

#: Metrics every method gets, in table order; all are "lower is better" except PSNR and SSIM.
METRICS = ("mae", "rmse", "psnr_db", "ssim", "sam_deg")


@dataclass(frozen=True)
class BlockSplitSpec:
    """Held-out blocks: ``val_frac`` of the candidate ``block_px`` squares, ``buffer_px`` ring."""

    block_px: int = 32
    val_frac: float = 0.5
    buffer_px: int = 8


@dataclass(frozen=True)
class Scene:
    """What every method sees: SAR (T, 2, H, W) dB, optical truth (T, C, H, W), clear (T, H, W),
    and the optical evidence the cube has (None when it lacks it): ``prior`` (T, C, H, W)
    reflectance, NaN where no clear S2 within the prior window; ``cloudy`` (T, C + 1, H, W)
    the same-date S2 as observed, then its cloud mask (1 = cloud, shadow or missing);
    ``dem`` (T, 1, H, W) metres. Bands of ``prior`` and ``cloudy`` follow ``bands``."""

    sar_db: np.ndarray
    truth: np.ndarray
    clear: np.ndarray
    bands: tuple[str, ...]
    times: tuple[str, ...]
    prior: np.ndarray | None = None
    cloudy: np.ndarray | None = None
    dem: np.ndarray | None = None

    def cloud_mask(self) -> np.ndarray | None:
        """(T, H, W) bool: where the same-date S2 is no evidence (mask set, or NaN)."""
        if self.cloudy is None:
            return None
        return ~(self.cloudy[:, -1] <= 0.5)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model input tiles in physical units, keyed as ``data.inputs`` names them."""
        out = {"sar": self.sar_db, "cloudy": self.cloudy, "prior": self.prior, "dem": self.dem}
        return {k: v for k, v in out.items() if v is not None}


def select_bands(scene: Scene, bands: Sequence[str]) -> Scene:
    """``scene`` with only ``bands`` of the truth and prior (the cloudy S2 keeps its mask)."""
    have = list(scene.bands)
    missing = [b for b in bands if b not in have]
    if missing:
        raise ValueError(f"no band(s) {missing} to score; the scene has {have}")
    idx = [have.index(b) for b in bands]
    cloudy = None if scene.cloudy is None else scene.cloudy[:, [*idx, -1]]
    prior = None if scene.prior is None else scene.prior[:, idx]
    return replace(scene, truth=scene.truth[:, idx], prior=prior, cloudy=cloudy, bands=tuple(bands))


def block_split(
    height: int,
    width: int,
    spec: BlockSplitSpec,
    seed: int,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held) boolean (H, W) masks for one seed.

    Candidate blocks are ``block_px`` squares on a grid anchored at the top-left of
    ``allowed``'s bounding box and lying wholly inside it (default: everywhere; e.g. the
    strip a checkpoint never trained on). At least one block is held out. ``train``
    excludes held blocks and a ``buffer_px`` ring around them.
    """
    b = spec.block_px
    if b <= 0 or not 0 < spec.val_frac < 1:
        raise ValueError(f"need block_px > 0 and 0 < val_frac < 1, got {spec}")
    ok = np.ones((height, width), bool) if allowed is None else np.asarray(allowed, bool)
    rows, cols = np.nonzero(ok.any(axis=1))[0], np.nonzero(ok.any(axis=0))[0]
    r0, c0 = (int(rows[0]), int(cols[0])) if rows.size else (0, 0)
    cands = [
        (r, c)
        for r in range(r0, height - b + 1, b)
        for c in range(c0, width - b + 1, b)
        if ok[r : r + b, c : c + b].all()
    ]
    if not cands:
        raise ValueError(f"no {b} px block fits the allowed area of a {height}x{width} image")
    n = max(1, int(round(spec.val_frac * len(cands))))
    rng = np.random.default_rng(seed)
    held = np.zeros((height, width), bool)
    for i in rng.permutation(len(cands))[:n]:
        r, c = cands[i]
        held[r : r + b, c : c + b] = True
    train = ~dilate(held, spec.buffer_px)
    return train, held


def ssim_pixels(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, H, W) band-mean SSIM of every scored pixel (``metrics.masked_ssim_map``: the
    gaussian window sees scored pixels only), NaN elsewhere."""
    return np.stack(
        [masked_ssim_map(pred[i], truth[i], mask[i]).mean(axis=0) for i in range(pred.shape[0])]
    )


def scores(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, ssim_px: np.ndarray | None = None
) -> dict[str, float]:
    """METRICS of (T, C, H, W) prediction vs truth over ``mask`` (T, H, W).

    MAE/RMSE/PSNR/SAM pool all masked pixels of all dates where prediction and truth are
    finite (``pixels`` of them; a method without a prediction somewhere, e.g. no prior, is
    scored where it has one); SSIM is the mean of the gaussian-window SSIM over the same
    pixels (``ssim_pixels``, or ``ssim_px`` when the caller has it). All NaN when no pixel
    counts.
    """
    p = np.moveaxis(pred, 1, 0).reshape(pred.shape[1], -1, pred.shape[-1])
    t = np.moveaxis(truth, 1, 0).reshape(truth.shape[1], -1, truth.shape[-1])
    m = np.asarray(mask, bool).reshape(-1, mask.shape[-1])
    n = int((m & np.isfinite(p).all(0) & np.isfinite(t).all(0)).sum())
    if n == 0:
        return {k: float("nan") for k in METRICS} | {"pixels": 0}
    allm = ssim_pixels(pred, truth, mask) if ssim_px is None else ssim_px
    allm = allm[np.asarray(mask, bool)]
    out = {
        "mae": mae(p, t, m),
        "rmse": rmse(p, t, m),
        "psnr_db": psnr(p, t, m),
        "ssim": float(np.nanmean(allm)) if np.isfinite(allm).any() else float("nan"),
        "sam_deg": sam_deg(p, t, m) if p.shape[0] >= 2 else float("nan"),
        "pixels": n,
    }
    return out


def region_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    regions: Mapping[str, np.ndarray],
    ssim_px: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """{region: MAE, SSIM, pixels} over ``mask`` (T, H, W) & each boolean region ((H, W),
    e.g. a label class or a slope class, or (T, H, W)). SSIM: the scored area's SSIM map
    (``ssim_pixels``) averaged over the region, so a region's windows keep the scored
    neighbours of other regions as context. NaN and 0 pixels for an empty region."""
    sp = ssim_pixels(pred, truth, mask) if ssim_px is None else ssim_px
    err = np.abs(pred - truth).mean(axis=1)  # (T, H, W); NaN where either is
    out = {}
    for name, region in regions.items():
        m = np.asarray(mask, bool) & np.broadcast_to(np.asarray(region, bool), mask.shape)
        m &= np.isfinite(err)
        n = int(m.sum())
        out[name] = {
            "mae": float(err[m].mean()) if n else float("nan"),
            "ssim": float(np.nanmean(sp[m])) if n and np.isfinite(sp[m]).any() else float("nan"),
            "pixels": n,
        }
    return out


def best_of_n_scores(
    hypotheses: np.ndarray, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """The MultiEarth challenge's score: per target image (date) with a scored pixel, the MAE
    of each of the N candidates (``hypotheses`` (N, T, C, H, W)) over its scored pixels, the
    best of them; ``best_of_n`` their mean over images, ``mae_per_image`` the same mean for
    the single output ``pred`` (the candidates' mean), ``n_candidates`` N."""
    best, single = [], []
    for t in range(truth.shape[0]):
        m = np.asarray(mask[t], bool) & np.isfinite(truth[t]).all(0) & np.isfinite(pred[t]).all(0)
        if not m.any():
            continue
        errs = [np.abs(h[t][:, m] - truth[t][:, m]).mean() for h in hypotheses]
        best.append(float(np.nanmin(errs)))
        single.append(float(np.abs(pred[t][:, m] - truth[t][:, m]).mean()))
    nan = float("nan")
    return {
        "best_of_n": float(np.mean(best)) if best else nan,
        "mae_per_image": float(np.mean(single)) if single else nan,
        "n_candidates": float(len(hypotheses)),
    }


@dataclass(frozen=True)
class Prediction:
    """A method's output: ``pred`` (T, C, H, W) reflectance and, when it states one, its
    per-pixel ``uncertainty`` (T, H, W; reflectance, band mean) and candidates."""

    pred: np.ndarray
    uncertainty: np.ndarray | None = None
    #: (N, T, C, H, W) the N candidates ``pred`` is the mean of (hypotheses, e.g. flips), for
    #: the MultiEarth best-of-N score; None for a single output
    hypotheses: np.ndarray | None = None


#: The baselines' names: the rows of evaluate's table and the keys of its ``scores.json``,
#: which ``jobs/demo.py`` reads back (one definition, so the two cannot drift apart).
RIDGE_PER_DATE = "ridge per date (baseline)"
RIDGE_POOLED = "ridge pooled (baseline)"
MEAN_COLOUR = "mean colour per date (baseline)"
COPY_PRIOR = "copy the prior clear pixel (baseline)"
PRIOR_FIT = "scene fit per date: SAR + prior (baseline)"
FILLED_FIT = "scene fit + clear pixels around (baseline)"
BASELINES = (RIDGE_PER_DATE, MEAN_COLOUR, RIDGE_POOLED, COPY_PRIOR, PRIOR_FIT, FILLED_FIT)


# A method maps (scene, train mask (H, W) or (T, H, W), seed) -> (T, C, H, W) or a Prediction.
Method = Callable[[Scene, np.ndarray, int], "np.ndarray | Prediction"]


def train_dates(train: np.ndarray, scene: Scene) -> np.ndarray:
    """The training mask per date (T, H, W): a block split's (H, W) mask is the same for all."""
    return np.broadcast_to(np.asarray(train, bool), scene.clear.shape)


def _per_date(
    scene: Scene,
    tm: np.ndarray,
    fit: Callable[[int], np.ndarray],
    min_px: int,
    dtype: str = "float32",
) -> np.ndarray:
    """``fit(t)`` -> (C, H, W) for every date with at least ``min_px`` training pixels ``tm``
    (T, H, W) where SAR and truth are finite; NaN for a date with fewer (e.g. all cloud):
    it goes unscored for the method, and its ``pixels`` say so."""
    ok = tm & np.isfinite(scene.sar_db).all(1) & np.isfinite(scene.truth).all(1)
    out = np.full(scene.truth.shape, np.nan, dtype)
    for i in range(scene.truth.shape[0]):
        if ok[i].sum() >= min_px:
            out[i] = fit(i)
    return out


def mean_colour_method(per_date: bool = True) -> Method:
    """Constant train-mean colour (per date, or one colour over all dates)."""

    def run(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        tm = scene.clear & train_dates(train, scene)
        if per_date:
            h, w = scene.clear.shape[1:]
            return _per_date(
                scene,
                tm,
                lambda i: np.broadcast_to(
                    constant_colour(scene.truth[i], tm[i])[:, None, None], (len(scene.bands), h, w)
                ),
                1,
            )
        out = np.empty(scene.truth.shape, "float32")
        col = constant_colour(np.moveaxis(scene.truth, 1, 0), tm)
        out[:] = col[None, :, None, None]
        return out

    return run


#: Training pixels a per-date ridge needs: more than its 6 SAR features (``fit_ridge``).
RIDGE_MIN_PX = 7


def ridge_method(per_date: bool = True, alpha: float = 1.0) -> Method:
    """Ridge from VV, VH, VV-VH and local means, fitted on the training pixels."""

    def fit_predict(sar_db: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return fit_sar_ridge(sar_db, truth, mask, alpha).predict(sar_db)

    def run(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        tm = scene.clear & train_dates(train, scene)
        if not per_date:
            return fit_predict(scene.sar_db, scene.truth, tm)
        d = lambda i: slice(i, i + 1)  # noqa: E731
        return _per_date(
            scene,
            tm,
            lambda i: fit_predict(scene.sar_db[d(i)], scene.truth[d(i)], tm[d(i)])[0],
            RIDGE_MIN_PX,
        )

    return run


def prior_fit_methods(alpha: float = 1.0) -> tuple[Method, Method]:
    """'Scene fit: SAR + prior' and 'scene fit + clear pixels around', sharing each date's
    fit (made once per scene and training mask, as ``run_protocol`` calls them in turn).

    The first: per date, the ridge from the SAR features and the prior clear optical to the
    date's training pixels (``models.reference.scene_fit``, the fit under the reference of an
    SCO/SCOD model with ``model.reference: scene_fit``), so the report shows what the net
    adds to it. Where a pixel has no prior, the date's SAR-only fit (a fit leaning on the
    prior errs more there with a stand-in than without it). The second: that fit's residual
    on the training pixels spread into the gaps (``models.reference.fill_residual``, as that
    reference spreads it), the strongest baseline that learns nothing: regression kriging
    from the clear pixels around."""
    import torch

    from sar2opt.models.reference import fill_residual, scene_fit

    last: list = []  # [scene, train, the fits as float64 (T, C, H, W), training pixels]

    def fits(scene: Scene, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if last and last[0] is scene and last[1] is train:
            return last[2], last[3]
        if scene.prior is None:
            raise ValueError("the cube has no prior bands (build it with cube.prior_days > 0)")
        tm = scene.clear & train_dates(train, scene)

        def fit(i: int) -> np.ndarray:
            prior = scene.prior[i].astype("float64")
            has = np.isfinite(prior).all(0)
            mean = prior[:, has].mean(1) if has.any() else np.zeros(prior.shape[0])
            prior = np.where(has[None], prior, mean[:, None, None])
            # a SAR gap (a swath's edge) stands in the date's mean, as inference gives the
            # model its standardised 0, and is left out of the fit and unscored (NaN): one
            # NaN feature in the ridge's sums made the whole date NaN
            sar = scene.sar_db[i].astype("float64")
            seen = np.isfinite(sar).all(0)
            sar = np.where(seen[None], sar, sar[:, seen].mean(1)[:, None, None])
            truth = np.nan_to_num(scene.truth[i]).astype("float64")
            ok = tm[i] & np.isfinite(scene.truth[i]).all(0) & seen
            t = [torch.from_numpy(a)[None] for a in (sar, truth)]
            pt, okt = torch.from_numpy(prior)[None], torch.from_numpy(ok)[None]
            # A whole date takes the per-date ridge's pixel rule (``_per_date``), not the
            # 10 % of a model's window that ``scene_fit`` asks by default: under laid clouds
            # and their buffer a date keeps less, and the fit fell back to the prior or 0.
            kw = {"min_px": 1}
            out = scene_fit(t[0].double(), t[1], okt, pt, alpha, extra=pt, **kw)[0].numpy()
            # where a pixel has no prior, the SAR-only fit of the date (the per-date ridge)
            sar_only = scene_fit(t[0].double(), t[1], okt, None, alpha, **kw)[0].numpy()
            return np.where(seen[None], np.where(has[None], out, sar_only), np.nan)

        out = _per_date(scene, tm, fit, RIDGE_MIN_PX, "float64")
        ok = tm & np.isfinite(scene.truth).all(1) & np.isfinite(scene.sar_db).all(1)
        last[:] = [scene, train, out, ok]
        return out, last[3]

    def plain(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        return fits(scene, train)[0].astype("float32")

    def filled(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        fit, ok = fits(scene, train)
        out = np.full(fit.shape, np.nan, "float32")
        for i in np.flatnonzero(np.isfinite(fit).any(axis=(1, 2, 3))):  # the fitted dates
            truth = np.nan_to_num(scene.truth[i]).astype("float64")
            f = fill_residual(*(torch.from_numpy(a)[None] for a in (fit[i], truth, ok[i])))
            out[i] = f[0].numpy()
        return out

    return plain, filled


def copy_prior_method() -> Method:
    """'Copy the prior clear pixel': the latest clear S2 before the date as the prediction
    (NaN, so unscored, where there is none within the prior window)."""

    def run(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        if scene.prior is None:
            raise ValueError("the cube has no prior bands (build it with cube.prior_days > 0)")
        return scene.prior.astype("float32", copy=False)

    return run


def fixed_method(pred: np.ndarray) -> Method:
    """A prediction made once, independent of the split (e.g. a trained checkpoint)."""
    return lambda scene, train, seed: pred


def predictor_method(
    predictor: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    keys: Sequence[str],
    candidates: bool = False,
    fits: FitLattice | None = None,
    fields: dict[int, dict[str, np.ndarray] | None] | None = None,
) -> Method:
    """A checkpoint through the inference predictor (``infer.predictor.TilePredictor``): per
    date, the scene's ``keys`` inputs (physical units; the cloudy S2 with any laid clouds)
    become exactly the tensors inference feeds (``model_inputs``); ``pred`` and the
    hypotheses' spread as its uncertainty (``uncertainty``, else ``spread``; None when all NaN,
    e.g. one hypothesis); with ``candidates`` and 2+ hypotheses, each of them (the
    predictor's ``keep_hypotheses``, for best-of-N). ``fits``: the scene's whole grid as an
    ``infer.run.FitLattice`` (``grid_fit_lattice``), for a scene-fit model's reference
    blended between block fits as inference blends it (``predictor.reference_fields``);
    without it the model fits one reference over the whole scene. ``fields``: a cache of each
    date's blended reference that callers share between predictors of one checkpoint on one
    scene (it depends on the inputs and the checkpoint's normalisation, not on the flips or
    the net's weights). The prediction is reused while the scene is the same object (block
    mode: once for all seeds)."""
    last: list = []
    many = candidates and getattr(predictor, "hypotheses", 1) > 1

    def run(scene: Scene, train: np.ndarray, seed: int) -> Prediction:
        if last and last[0] is scene:
            return last[1]
        have = scene.inputs()
        missing = [k for k in keys if k not in have]
        if missing:
            raise ValueError(f"the scene lacks the model input(s) {missing}")
        preds, uncs, hyps = [], [], []
        for t in range(scene.truth.shape[0]):
            batch = {k: have[k][t : t + 1] for k in keys}
            if fits is not None:
                if fields is not None and t in fields:
                    field = fields[t]
                else:
                    field = predictor.reference_fields(
                        batch, fits.windows, fits.centres_y, fits.centres_x
                    )
                    if fields is not None:
                        fields[t] = field
                if field is not None:  # the area is the grid: (1, M, Co, H, W) each
                    batch |= {k: v[None] for k, v in field.items()}
            out = predictor(batch, keep_hypotheses=True) if many else predictor(batch)
            preds.append(np.asarray(out["pred"], "float32"))
            unc = out.get("uncertainty", out.get("spread"))
            uncs.append(None if unc is None else np.asarray(unc, "float32"))
            if many:
                hyps.append(out["hypotheses"])
        unc = None if any(u is None for u in uncs) else np.concatenate(uncs)
        if unc is not None and not np.isfinite(unc).any():
            unc = None
        res = Prediction(np.concatenate(preds), unc, np.concatenate(hyps, axis=1) if hyps else None)
        last[:] = [scene, res]
        return res

    return run


@dataclass(frozen=True)
class CloudLaySpec:
    """Cloud-removal scoring (module doc): a donor date's cloud mask must cover
    ``min_cover``..``max_cover`` of the scored area (a date without S2 is no cloud shape), a
    target date must be clear on at least ``min_clear`` of it; a ``buffer_px`` ring around
    the laid clouds is kept out of the per-date fits (0: they fit on every pixel the model's
    cloudy input shows, the module doc's rule)."""

    buffer_px: int = 0
    min_cover: float = 0.02
    max_cover: float = 0.8
    min_clear: float = 0.5


#: ``lay_clouds``'s donors: none (the date is not scored), the held-out blocks laid instead
#: of a cloud, and the lent masks: ``LENT_DONOR - k`` is the k-th mask lent by other cubes.
NO_DONOR, BLOCKS_DONOR, LENT_DONOR = -1, -2, -3


def donor_name(donor: int, times: Sequence[str] = ()) -> str:
    """What ``lay_clouds`` laid on a date, for logs and reports: a date of the cube, the
    held-out blocks, or a mask lent by another cube."""
    if donor <= LENT_DONOR:
        return f"lent mask {LENT_DONOR - donor}"
    if donor < 0:
        return "the held-out blocks"
    return times[donor][:10] if donor < len(times) else f"date {donor}"


def lent_masks(cube_paths: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool: every date's cloud mask of the cubes at ``cube_paths`` (their
    ``cloud_mask`` band; NaN, no S2, counts as cloud), cut to ``shape`` from the top-left
    corner, mirrored where a cube is smaller: real cloud shapes for a cube with no cloudy
    date of its own (``lay_clouds``). A date without S2 is all cloud, and ``lay_clouds``'s
    cover rule leaves it out."""
    import xarray as xr

    from sar2opt.data.patches import CLOUD_MASK_BAND

    h, w = shape
    out = []
    for path in cube_paths:
        cube = xr.open_zarr(path)["cube"]
        if CLOUD_MASK_BAND not in [str(b) for b in cube.band.values]:
            raise ValueError(f"{path}: no {CLOUD_MASK_BAND} band (build it with cube.cloudy)")
        m = ~(cube.sel(band=CLOUD_MASK_BAND).values <= 0.5)  # (T, h', w')
        while m.shape[1] < h or m.shape[2] < w:  # mirrored until it covers the grid
            dy = min(m.shape[1], max(0, h - m.shape[1]))
            dx = min(m.shape[2], max(0, w - m.shape[2]))
            m = np.pad(m, ((0, 0), (0, dy), (0, dx)), mode="symmetric")
        out.append(m[:, :h, :w])
    return np.concatenate(out)


def lay_clouds(
    scene: Scene,
    seed: int,
    spec: CloudLaySpec = CloudLaySpec(),
    allowed: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    lent: np.ndarray | None = None,
) -> tuple[Scene, np.ndarray, dict[int, int]]:
    """(scene with the laid clouds in its cloudy input, laid mask (T, H, W), {target: donor}).

    Per clear target date ``t`` the donor is drawn among the cloudy dates other than ``t``
    from ``seed`` and ``t`` alone (deterministic). The donor masks are the cube's
    ``cloud_mask`` (``~clear`` when the cube has no same-date S2 bands); the cloudy input's
    own mask is united with them by ``data.stream.lay_cloud_masks``, as in training.
    A cube with no cloudy date to donate (a clear season) gets a real cloud shape of other
    cubes instead when ``lent`` (K, H, W; ``lent_masks``) holds one that covers the share of
    the area a donor must (drawn the same way; donor ``LENT_DONOR - k``), else ``blocks``
    (H, W), e.g. a seed's held-out blocks, on every clear date (donor ``BLOCKS_DONOR``); the
    error without either says what is missing.
    """
    from sar2opt.data.stream import lay_cloud_masks

    n_t, h, w = scene.clear.shape
    area = np.ones((h, w), bool) if allowed is None else np.asarray(allowed, bool)
    n_area = max(int(area.sum()), 1)
    clouds = scene.cloud_mask()
    clouds = ~scene.clear if clouds is None else clouds
    cover = (clouds & area).sum(axis=(1, 2)) / n_area
    clear = (scene.clear & area).sum(axis=(1, 2)) / n_area
    donor_ok = (cover >= spec.min_cover) & (cover <= spec.max_cover)
    donors = np.full(n_t, NO_DONOR, dtype=np.int64)
    for t in range(n_t):
        cands = np.flatnonzero(donor_ok & (np.arange(n_t) != t))
        if clear[t] >= spec.min_clear and cands.size:
            donors[t] = cands[np.random.default_rng([int(seed), t]).integers(cands.size)]
    lent_ok = np.zeros(0, dtype=np.int64)
    if lent is not None and len(lent):
        lc = (lent & area).sum(axis=(1, 2)) / n_area
        lent_ok = np.flatnonzero((lc >= spec.min_cover) & (lc <= spec.max_cover))
    if not (donors >= 0).any() and lent_ok.size:
        for t in np.flatnonzero(clear >= spec.min_clear):
            k = lent_ok[np.random.default_rng([int(seed), int(t)]).integers(lent_ok.size)]
            donors[t] = LENT_DONOR - k
    elif not (donors >= 0).any() and blocks is not None:
        donors[clear >= spec.min_clear] = BLOCKS_DONOR
    sel = donors != NO_DONOR
    if not sel.any():
        raise ValueError(
            f"no clear date (>= {spec.min_clear:.0%} clear) with another date whose cloud mask "
            f"covers {spec.min_cover:.0%}-{spec.max_cover:.0%} of the scored area to lay on it "
            f"(cloud cover per date: {', '.join(f'{c:.0%}' for c in cover)})"
        )
    laid = np.zeros((n_t, h, w), bool)
    for t in np.flatnonzero(sel):
        d = donors[t]
        laid[t] = clouds[d] if d >= 0 else lent[LENT_DONOR - d] if d <= LENT_DONOR else blocks
    cloudy = scene.cloudy
    if cloudy is not None:
        cloudy = lay_cloud_masks(
            cloudy, laid[sel][:, None].astype("float32"), np.where(sel, 0, NO_DONOR)
        )
    pairs = {int(t): int(donors[t]) for t in np.flatnonzero(sel)}
    return replace(scene, cloudy=cloudy), laid, pairs


@dataclass(frozen=True)
class ProtocolResult:
    """Per-seed scores and their mean ± std (sample std over seeds) for every method.

    ``held`` per seed: the (H, W) held-out blocks, or in cloud-removal mode the (T, H, W)
    laid clouds scored; ``laid`` per seed: {target date: donor date} (empty for blocks);
    ``stated`` per method that states an uncertainty: (uncertainty, |error|, group) of every
    scored pixel of every seed (|error| the mean over scored bands; group: its block, date
    and seed, ``reliability.pixel_groups``), for ``reliability_table``;
    ``per_region`` per method and seed: ``region_scores`` of the regions given (label
    classes, slope classes); ``downstream`` per seed: the downstream check's result.
    A method with candidates also has ``best_of_n``, ``mae_per_image`` and
    ``n_candidates`` in its rows (``best_of_n_scores``).
    """

    seeds: tuple[int, ...]
    per_seed: dict[str, list[dict[str, float]]]
    held: list[np.ndarray]
    first_preds: dict[str, np.ndarray]  # predictions of the first seed, for pictures
    bands: tuple[str, ...] = ()
    mode: str = "blocks"  # or "cloud removal"
    laid: list[dict[int, int]] = field(default_factory=list)
    stated: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    per_region: dict[str, list[dict[str, dict[str, float]]]] = field(default_factory=dict)
    downstream: list[dict] = field(default_factory=list)

    @cached_property
    def reliability(self) -> dict[str, list[ReliabilityRow]]:
        """Per method in ``stated``, its ``reliability_table`` with block-bootstrap intervals:
        made once, for the report and scores.json alike (the bootstrap is not free)."""
        return {k: reliability_table(u, e, groups=g) for k, (u, e, g) in self.stated.items()}

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Per method, mean ± std over seeds of METRICS, ``pixels`` and, for a method with
        candidates, ``BEST_OF_N_KEYS``."""
        out = {}
        for name, rows in self.per_seed.items():
            keys = [*METRICS, "pixels"]
            keys += [k for k in BEST_OF_N_KEYS if rows and all(k in r for r in rows)]
            out[name] = {k: mean_std([r[k] for r in rows]) for k in keys}
        return out

    def region_summary(self) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
        """{method: {region: {mae, ssim, pixels: mean ± std over seeds}}}."""
        return {
            name: {
                reg: {k: mean_std([r[reg][k] for r in rows]) for k in ("mae", "ssim", "pixels")}
                for reg in rows[0]
            }
            for name, rows in self.per_region.items()
            if rows
        }


#: The best-of-N keys of a method with candidates (``best_of_n_scores``).
BEST_OF_N_KEYS = ("best_of_n", "mae_per_image", "n_candidates")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value), NaN-aware."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype="float64")
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def run_protocol(
    scene: Scene,
    methods: dict[str, Method],
    spec: BlockSplitSpec,
    seeds: Sequence[int],
    allowed: np.ndarray | None = None,
    log: Callable[[str], None] = lambda s: None,
    bands: Sequence[str] | None = None,
    clouds: CloudLaySpec | None = None,
    regions: Mapping[str, np.ndarray] | None = None,
    downstream: Callable[..., dict] | None = None,
    lent: np.ndarray | None = None,
) -> ProtocolResult:
    """Score every method on the same pixels for each seed, on ``bands`` (default: all).

    Blocks (``clouds`` None): held-out blocks of ``block_split`` inside ``allowed``, the
    methods fitted outside them and their ring. Cloud removal: ``lay_clouds`` per seed; the
    methods see the laid cloudy input, fit outside the laid clouds and their
    ``clouds.buffer_px`` ring, and are scored under the laid clouds (inside ``allowed``).
    ``regions``: named boolean (H, W) or (T, H, W) masks scored apart (``region_scores``);
    ``downstream(scene, train, score_mask, preds, seed)`` (e.g.
    ``evaluate.downstream.downstream_check``) runs once per seed on every method's
    prediction of the scored bands.
    """
    n_t, _, h, w = scene.truth.shape
    names = list(scene.bands)
    bands = tuple(bands or names)
    idx = [names.index(b) for b in bands]
    truth = scene.truth[:, idx]
    per_seed: dict[str, list[dict[str, float]]] = {k: [] for k in methods}
    helds: list[np.ndarray] = []
    laids: list[dict[int, int]] = []
    first: dict[str, np.ndarray] = {}
    stated: dict[str, list[tuple[np.ndarray, ...]]] = {}
    per_region: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in methods}
    checks: list[dict] = []
    scored = select_bands(scene, bands) if downstream is not None else scene
    for s in seeds:
        if clouds is None:
            train, held = block_split(h, w, spec, int(s), allowed)
            seen = scene
            score_mask = scene.clear.astype(bool) & held[None]
        else:
            blocks = block_split(h, w, spec, int(s), allowed)[1]  # for a cloud-free cube
            seen, laid, pairs = lay_clouds(scene, int(s), clouds, allowed, blocks, lent)
            train = ~dilate(laid, clouds.buffer_px)
            held = laid if allowed is None else laid & np.asarray(allowed, bool)[None]
            score_mask = scene.clear.astype(bool) & held
            laids.append(pairs)
            lays = ", ".join(
                f"of {donor_name(d, scene.times)} on {scene.times[t][:10]}"
                for t, d in pairs.items()
            )
            log(f"seed {s}: clouds laid: {lays}; {int(score_mask.sum())} px scored")
        helds.append(held)
        seed_preds: dict[str, np.ndarray] = {}
        for name, method in methods.items():
            t0 = time.monotonic()
            log(f"seed {s}  {name} ...")
            out = method(seen, train, int(s))
            out = out if isinstance(out, Prediction) else Prediction(out)
            pred = out.pred[:, idx]
            sp = ssim_pixels(pred, truth, score_mask)
            row = scores(pred, truth, score_mask, sp)
            if out.hypotheses is not None:
                row |= best_of_n_scores(out.hypotheses[:, :, idx], pred, truth, score_mask)
            per_seed[name].append(row)
            if regions:
                per_region[name].append(region_scores(pred, truth, score_mask, regions, sp))
            if downstream is not None:
                seed_preds[name] = pred
            log(
                f"seed {s}  {name:32s} MAE {row['mae']:.4f}  PSNR {row['psnr_db']:.2f} dB  "
                f"({time.monotonic() - t0:.1f} s)"
            )
            if out.uncertainty is not None:
                err = np.abs(pred - truth).mean(axis=1)
                ok = score_mask & np.isfinite(err) & np.isfinite(out.uncertainty)
                stated.setdefault(name, []).append(
                    (out.uncertainty[ok], err[ok], pixel_groups(ok, len(helds) - 1))
                )
            if s == seeds[0]:
                first[name] = pred
        if downstream is not None:
            log(f"seed {s}  downstream check ...")
            checks.append(downstream(scored, train, score_mask, seed_preds, int(s)))
    return ProtocolResult(
        tuple(int(s) for s in seeds),
        per_seed,
        helds,
        first,
        bands,
        "blocks" if clouds is None else "cloud removal",
        laids,
        {
            k: tuple(np.concatenate(parts) for parts in zip(*v, strict=True))
            for k, v in stated.items()
        },
        {k: v for k, v in per_region.items() if v},
        checks,
    )


def _band_names(attrs: Mapping, have: Sequence[str], key: str, opt: Sequence[str]) -> list[str]:
    """Cube bands of input ``key`` for the optical bands ``opt``: the cube's naming rule
    (``data.patches``), loaded only when the cube has all of them."""
    from sar2opt.data.patches import CLOUD_MASK_BAND, CLOUDY_PREFIX, DEM_BAND, PRIOR_PREFIX

    names = {
        "prior": [PRIOR_PREFIX + b for b in opt],
        "cloudy": [*(CLOUDY_PREFIX + b for b in opt), CLOUD_MASK_BAND],
        "dem": [str(attrs.get("dem_band") or DEM_BAND)],
    }[key]
    return names if all(b in have for b in names) else []


def load_scene(
    cube_path: str,
    opt_bands: Sequence[str] | None = None,
    aux: Mapping[str, Sequence[str]] | None = None,
) -> Scene:
    """The whole cube in memory as a Scene (evaluation regions are scored, not tiled).

    ``aux``: the cube bands of ``prior`` / ``cloudy`` / ``dem`` (e.g. a checkpoint's
    ``aux_bands``); the others are loaded when the cube has them under their usual names.
    """
    import xarray as xr

    ds = xr.open_zarr(cube_path)
    cube = ds["cube"]
    have = [str(b) for b in cube.band.values]
    sar_bands = list(ds.attrs.get("sar_bands", ["vv", "vh"]))
    opt = list(opt_bands or ds.attrs.get("opt_bands", []))
    missing = [b for b in [*sar_bands, *opt, "clear"] if b not in have]
    if missing or len(sar_bands) != 2 or not opt:
        raise ValueError(f"cube lacks bands {missing or 'vv/vh + optical'}; it has {have}")
    extra = {}
    for key in ("prior", "cloudy", "dem"):
        names = list((aux or {}).get(key) or _band_names(ds.attrs, have, key, opt))
        lacks = [b for b in names if b not in have]
        if lacks:
            raise ValueError(f"cube lacks bands {lacks}; it has {have}")
        if names:
            extra[key] = cube.sel(band=names).values.astype("float32")
    return Scene(
        sar_db=cube.sel(band=sar_bands).values.astype("float32"),
        truth=cube.sel(band=opt).values.astype("float32"),
        clear=cube.sel(band="clear").values > 0.5,
        bands=tuple(opt),
        times=tuple(str(t)[:19] for t in cube.time.values),
        **extra,
    )
