"""Spatially held-out scoring over several seeds: block splits, methods, mean ± std.

Random pixel splits flatter every model (a held-out pixel's neighbour was in training), so
the region is cut into square blocks and a random subset of whole blocks is held out; a
``buffer_px`` ring around them is kept out of training too. Each seed draws other blocks.
The same held-out pixels are scored for every method, at every date of the cube.

Within-scene protocol: methods that fit per date (``per_date``) learn from the training
blocks of that same acquisition and fill its held-out blocks - the operational case where
clear areas of a scene teach and cloudy ones are filled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sar2opt.evaluate.baselines import constant_colour, fit_sar_ridge
from sar2opt.evaluate.metrics import mae, psnr, rmse, sam_deg, ssim_map
from sar2opt.ops import dilate

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
    """What every method sees: SAR (T, 2, H, W) dB, optical truth (T, C, H, W), clear (T, H, W)."""

    sar_db: np.ndarray
    truth: np.ndarray
    clear: np.ndarray
    bands: tuple[str, ...]
    times: tuple[str, ...]


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


def scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """METRICS of (T, C, H, W) prediction vs truth over ``mask`` (T, H, W).

    MAE/RMSE/PSNR/SAM pool all masked pixels of all dates; SSIM averages every fully
    masked 7 px window of every date (NaN if the held blocks are smaller than a window).
    """
    p = np.moveaxis(pred, 1, 0).reshape(pred.shape[1], -1, pred.shape[-1])
    t = np.moveaxis(truth, 1, 0).reshape(truth.shape[1], -1, truth.shape[-1])
    m = np.asarray(mask, bool).reshape(-1, mask.shape[-1])
    maps = [ssim_map(pred[i], truth[i], mask[i]) for i in range(pred.shape[0])]
    allm = np.concatenate([x.ravel() for x in maps])
    out = {
        "mae": mae(p, t, m),
        "rmse": rmse(p, t, m),
        "psnr_db": psnr(p, t, m),
        "ssim": float(np.nanmean(allm)) if np.isfinite(allm).any() else float("nan"),
        "sam_deg": sam_deg(p, t, m) if p.shape[0] >= 2 else float("nan"),
        "pixels": int((m & np.isfinite(p).all(0) & np.isfinite(t).all(0)).sum()),
    }
    return out


# A method maps (scene, train mask (H, W), seed) -> prediction (T, C, H, W).
Method = Callable[[Scene, np.ndarray, int], np.ndarray]


def mean_colour_method(per_date: bool = True) -> Method:
    """Constant train-mean colour (per date, or one colour over all dates)."""

    def run(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        out = np.empty(scene.truth.shape, "float32")
        tm = scene.clear & train[None]
        if per_date:
            for i in range(scene.truth.shape[0]):
                col = constant_colour(scene.truth[i], tm[i])
                out[i] = col[:, None, None]
        else:
            col = constant_colour(np.moveaxis(scene.truth, 1, 0), tm)
            out[:] = col[None, :, None, None]
        return out

    return run


def ridge_method(per_date: bool = True, alpha: float = 1.0) -> Method:
    """Ridge from VV, VH, VV-VH and local means, fitted on the training pixels."""

    def fit_predict(sar_db: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return fit_sar_ridge(sar_db, truth, mask, alpha).predict(sar_db)

    def run(scene: Scene, train: np.ndarray, seed: int) -> np.ndarray:
        tm = scene.clear & train[None]
        if not per_date:
            return fit_predict(scene.sar_db, scene.truth, tm)
        dates = [slice(i, i + 1) for i in range(scene.truth.shape[0])]
        return np.concatenate([fit_predict(scene.sar_db[d], scene.truth[d], tm[d]) for d in dates])

    return run


def fixed_method(pred: np.ndarray) -> Method:
    """A prediction made once, independent of the split (e.g. a trained checkpoint)."""
    return lambda scene, train, seed: pred


@dataclass(frozen=True)
class ProtocolResult:
    """Per-seed scores and their mean ± std (sample std over seeds) for every method."""

    seeds: tuple[int, ...]
    per_seed: dict[str, list[dict[str, float]]]
    held: list[np.ndarray]  # (H, W) held-out mask per seed
    first_preds: dict[str, np.ndarray]  # predictions of the first seed, for pictures

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        return {
            name: {k: mean_std([r[k] for r in rows]) for k in (*METRICS, "pixels")}
            for name, rows in self.per_seed.items()
        }


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
) -> ProtocolResult:
    """Score every method on the held-out blocks of every seed (same pixels for all)."""
    _, _, h, w = scene.truth.shape
    per_seed: dict[str, list[dict[str, float]]] = {k: [] for k in methods}
    helds: list[np.ndarray] = []
    first: dict[str, np.ndarray] = {}
    for s in seeds:
        train, held = block_split(h, w, spec, int(s), allowed)
        helds.append(held)
        score_mask = scene.clear.astype(bool) & held[None]
        for name, method in methods.items():
            pred = method(scene, train, int(s))
            row = scores(pred, scene.truth, score_mask)
            per_seed[name].append(row)
            log(f"seed {s}  {name:32s} MAE {row['mae']:.4f}  PSNR {row['psnr_db']:.2f} dB")
            if s == seeds[0]:
                first[name] = pred
    return ProtocolResult(tuple(int(s) for s in seeds), per_seed, helds, first)


def load_scene(cube_path: str, opt_bands: Sequence[str] | None = None) -> Scene:
    """The whole cube in memory as a Scene (evaluation regions are scored, not tiled)."""
    import xarray as xr

    ds = xr.open_zarr(cube_path)
    cube = ds["cube"]
    have = [str(b) for b in cube.band.values]
    sar_bands = list(ds.attrs.get("sar_bands", ["vv", "vh"]))
    opt = list(opt_bands or ds.attrs.get("opt_bands", []))
    missing = [b for b in [*sar_bands, *opt, "clear"] if b not in have]
    if missing or len(sar_bands) != 2 or not opt:
        raise ValueError(f"cube lacks bands {missing or 'vv/vh + optical'}; it has {have}")
    return Scene(
        sar_db=cube.sel(band=sar_bands).values.astype("float32"),
        truth=cube.sel(band=opt).values.astype("float32"),
        clear=cube.sel(band="clear").values > 0.5,
        bands=tuple(opt),
        times=tuple(str(t)[:19] for t in cube.time.values),
    )
