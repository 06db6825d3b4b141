"""Stream patches from the cube's Zarr store into training, never holding the cube or all patches.

The driver holds only the patch index (``sar2opt.data.index``: a few numbers per patch). A Ray
Dataset is built from its rows and ``map_batches`` reads ``rows_per_read`` patch windows per
task from the store: each batch opens the Zarr array once (metadata only) and reads, per date,
the bounding window of its patches when that is cheaper than patch-by-patch reads. Rows are
ordered by (time, block, row, col) first, so the patches of one read sit in one block and
share chunks.

Batch keys and values are exactly what the trainer feeds its models (float32):

- ``sar`` (Cs, P, P): (SAR - sar_mean) / sar_std;
- ``opt`` (Co, P, P): (optical - opt_mean) / opt_std at clear pixels, 0 elsewhere;
- ``mask`` (1, P, P): 1 = clear optical pixel (cube band ``clear`` > 0.5);
- ``prior`` (Co, P, P): prior optical normalised with the *optical* statistics, when
  ``aux`` has ``"prior"``; ``dem`` (1, P, P): (DEM - dem_mean) / dem_std when it has ``"dem"``;
- ``cloudy`` (Co + 1, P, P): the same-date S2 normalised with the optical statistics, 0 at
  masked pixels, then its cloud mask (``data.inputs.normalise_cloudy``), when it has
  ``"cloudy"``.

``aux`` is ``sar2opt.train.trainer.aux_bands(attrs, opt_bands, input_set)``: cube band names
of the extra inputs, ``{"cloudy": [...], "prior": [...], "dem": [...]}``.

Cloud removal (SC/SCO/SCOD) learns to fill what its cloud mask hides, but training patches
are cut where the *target* is clear, so their same-date S2 is mostly clear and the cloudy
input mostly the target itself: a model fed only that learns to copy. ``CloudMasks`` lays
real clouds on them: a seeded share of patches gets, on top of its own cloud mask, the cloud
mask of the same window at another date of the cube (real cloud shapes and sizes of the
place, or a whole date without S2); the loss counts every clear target pixel, so the hidden
ones teach the fill. A cube whose dates are (almost) all clear has no such mask: its patches
get real cloudy windows of the other training cubes (``lend_cloud_windows``: masks are just
shapes of the patch size), or synthetic shapes (``cloud_shapes``) when no cube has clouds.
Each patch's draw depends only on the seed and its (cube, time, row, col), the same in every
epoch and however the rows are batched or cached. ``norm`` is :func:`norm_stats`'s dict,
computed once over the train split (of every cube) and stored with the checkpoint.

Several cubes: the index rows name their cube in column ``cube`` (position in the tuple of
cube paths the readers take; absent = one cube), and each patch is read from its cube
(``CubeSource``: its store and its own band order).

Data tasks ask for a fraction of a CPU (``num_cpus``): Train workers hold whole CPUs, and on
a small machine whole-CPU read tasks would never be scheduled.

Every epoch re-executes the dataset: a seeded train stream takes its index blocks (groups of
neighbouring patches) in a new order each epoch. A split small enough for the object store
(:func:`cache_split`, bounded by a byte budget) is read once and then served from memory in a
new block order each epoch; a larger one keeps streaming from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sar2opt.data.cloud_shapes import synthetic_cloud_mask
from sar2opt.data.inputs import MASK_CH, REF_ERR_KEY, REF_KEY, normalise_input
from sar2opt.data.normalise import MIN_STD
from sar2opt.data.patches import CLEAR_BAND, PatchError

if TYPE_CHECKING:
    import ray.data

AUX_KEYS = ("cloudy", "prior", "dem")  # extra inputs, in the cube-band order the reader uses
WINDOW_FACTOR = 4.0  # read one bounding window per date when <= this x the patches' area
BATCHES_PER_BLOCK = 4  # read batches per Ray block of index rows: parallelism vs. overhead
#: Context windows whose reference a read task fits at once (``window_references``): the
#: fit, its fill and its error hold several float64 copies of each window; all 128 windows
#: of a read at once peaked at 3.5 GB for 256-px windows (``infer.tile_px``'s default), 16
#: at a time at 1.3 GB, and ran faster (``benchmarks/bench_context_reference.py``).
REF_CHUNK = 16
STATS_BATCH = 64  # patches read per step by norm_stats
CACHE_BLOCK_ROWS = 16  # patches per block of a cached split: the unit of per-epoch reordering


def _store_array(cube_path: str | Path) -> tuple[object, list[str]]:
    """The store's ``cube`` array (lazy) and its band names."""
    import zarr

    try:
        group = zarr.open_group(str(cube_path), mode="r")
        arr = group["cube"]
        bands = [str(b) for b in group["band"][...]]
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise PatchError(f"cannot open cube store {cube_path}: {e}") from None
    if arr.ndim != 4 or arr.shape[1] != len(bands):
        raise PatchError(f"{cube_path}: 'cube' must be (time, band, y, x), got {arr.shape}")
    return arr, bands


def _band_layout(
    have: list[str], sar_bands: Sequence[str], opt_bands: Sequence[str], aux: Mapping
) -> list[int]:
    """Store band indices in reader order: sar, opt, clear, then each AUX_KEYS entry of aux."""
    unknown = [k for k in aux if k not in AUX_KEYS]
    if unknown:
        raise PatchError(f"unknown aux input(s) {unknown}; known: {', '.join(AUX_KEYS)}")
    names = [*sar_bands, *opt_bands, CLEAR_BAND, *(b for k in AUX_KEYS for b in aux.get(k, []))]
    missing = [b for b in names if b not in have]
    if missing:
        raise PatchError(f"cube lacks band(s) {missing}; it has {have}")
    return [have.index(b) for b in names]


def _read_windows(
    arr: object, band_idx: list[int], t: np.ndarray, r: np.ndarray, c: np.ndarray,
    p: int | tuple[int, int],
) -> np.ndarray:  # fmt: skip
    """Raw float32 windows (N, len(band_idx), P, P) at origins (t, r, c), in the given order
    (``p`` = (height, width): (N, B, height, width))."""
    ph, pw = (p, p) if isinstance(p, int) else p
    out = np.empty((len(t), len(band_idx), ph, pw), dtype=np.float32)
    bsel = np.asarray(band_idx)
    for tt in np.unique(t):
        ii = np.flatnonzero(t == tt)
        r0, r1 = int(r[ii].min()), int(r[ii].max()) + ph
        c0, c1 = int(c[ii].min()), int(c[ii].max()) + pw
        if (r1 - r0) * (c1 - c0) <= WINDOW_FACTOR * len(ii) * ph * pw:
            win = arr.get_orthogonal_selection((int(tt), bsel, slice(r0, r1), slice(c0, c1)))
            for i in ii:
                out[i] = win[:, r[i] - r0 : r[i] - r0 + ph, c[i] - c0 : c[i] - c0 + pw]
        else:
            for i in ii:
                sl = (
                    int(tt),
                    bsel,
                    slice(int(r[i]), int(r[i]) + ph),
                    slice(int(c[i]), int(c[i]) + pw),
                )
                out[i] = arr.get_orthogonal_selection(sl)
    return out


def _split_raw(raw: np.ndarray, n_sar: int, n_opt: int, aux: Mapping) -> dict[str, np.ndarray]:
    """Raw reader-order bands -> sar, opt, mask (bool) and aux arrays, unnormalised."""
    parts = {
        "sar": raw[:, :n_sar],
        "opt": raw[:, n_sar : n_sar + n_opt],
        "mask": np.nan_to_num(raw[:, n_sar + n_opt : n_sar + n_opt + 1], nan=0.0) > 0.5,
    }
    i = n_sar + n_opt + 1
    for k in AUX_KEYS:
        if k in aux:
            parts[k] = raw[:, i : i + len(aux[k])]
            i += len(aux[k])
    return parts


@dataclass(frozen=True)
class CubeSource:
    """One cube a patch stream reads: its store, the store indices of the bands in reader
    order (``_band_layout``) and its number of dates. A patch's index row names its cube
    by position (column ``cube``; 0 when absent: one cube)."""

    path: str
    band_idx: tuple[int, ...]
    n_time: int


def cube_paths(cube_path: str | Path | Sequence[str | Path]) -> tuple[str, ...]:
    """One cube path or several, as a tuple of strings (index column ``cube`` = position)."""
    if isinstance(cube_path, (str, Path)):
        return (str(cube_path),)
    return tuple(str(c) for c in cube_path)


def cube_sources(
    cube_path: str | Path | Sequence[str | Path],
    sar_bands: Sequence[str],
    opt_bands: Sequence[str],
    aux: Mapping,
) -> tuple[CubeSource, ...]:
    """A ``CubeSource`` per cube: every cube must have the bands (each in its own order)."""
    out = []
    for path in cube_paths(cube_path):
        arr, have = _store_array(path)
        try:
            idx = _band_layout(have, sar_bands, opt_bands, aux)
        except PatchError as e:
            raise PatchError(f"{path}: {e}") from None
        out.append(CubeSource(path, tuple(idx), int(arr.shape[0])))
    return tuple(out)


def row_cubes(rows: Mapping | pd.DataFrame) -> np.ndarray:
    """Each index row's cube position (column ``cube``; all 0 without it)."""
    if "cube" in rows:
        return np.asarray(rows["cube"], dtype=np.int64)
    return np.zeros(len(np.asarray(rows["time"])), dtype=np.int64)


def row_repeats(rows: Mapping | pd.DataFrame) -> np.ndarray:
    """Each index row's copy number (column ``repeat`` of ``index.balance_cubes``; all 0
    without it)."""
    if "repeat" in rows:
        return np.asarray(rows["repeat"], dtype=np.int64)
    return np.zeros(len(np.asarray(rows["time"])), dtype=np.int64)


@dataclass(frozen=True)
class CloudPlan:
    """Per patch, where the cloud mask laid on it comes from (-1: not that source): a date
    of its own cube (``date``), a cloudy window lent by another cube (``lent``: index into
    ``CloudMasks.lent``), or a synthetic shape (``synthetic``: its seed)."""

    date: np.ndarray
    lent: np.ndarray
    synthetic: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return (self.date >= 0) | (self.lent >= 0) | (self.synthetic >= 0)


@dataclass(frozen=True)
class CloudMasks:
    """Evidence hidden in training as inference meets it missing (module doc): with
    probability ``rate`` a patch gets a cloud mask united with its own (cloud removal): the
    mask of its window at another date of its cube (uniform over the cube's other dates);
    for a cube in ``borrow`` (its train split has too few real clouds,
    ``lend_cloud_windows``), a real cloudy window that another cube lends (``lent``:
    (cube, time, row, col) windows of the patch size), or when no cube lends any, a
    synthetic shape (``cloud_shapes.synthetic_cloud_mask``). With probability
    ``prior_gap_rate`` its prior is withheld (the band mean, as inference gives a pixel with
    no clear S2 within ``prior_days``: the index keeps only patches with a prior, so without
    gaps a model never sees one, and on the real BioMassters chip a net under a scene-fit
    reference went 3x wrong where April's prior is missing). Drawn from ``seed`` and the
    patch's (cube, time, row, col) and its copy (``repeat``: ``index.balance_cubes``); cube 0
    and copy 0 draw as a single cube always has."""

    seed: int = 0
    rate: float = 0.5
    prior_gap_rate: float = 0.0
    borrow: tuple[int, ...] = ()
    lent: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise PatchError(f"cloud mask rate must be in [0, 1], got {self.rate}")
        if not 0 <= self.prior_gap_rate <= 1:
            raise PatchError(f"prior gap rate must be in [0, 1], got {self.prior_gap_rate}")

    def prior_gaps(
        self,
        cube: np.ndarray,
        t: np.ndarray,
        r: np.ndarray,
        c: np.ndarray,
        rep: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per patch, whether its prior is withheld (a draw apart from the cloud donors',
        and apart between cubes: patches of two cubes at one (time, row, col) draw anew)."""
        rep = np.zeros(len(t), dtype=np.int64) if rep is None else rep
        return np.array(
            [
                np.random.default_rng(
                    [1, *self._key(int(k), int(tt), int(rr), int(cc), int(q))]
                ).random()
                < self.prior_gap_rate
                for k, tt, rr, cc, q in zip(cube, t, r, c, rep, strict=True)
            ],
            dtype=bool,
        )

    def _key(self, k: int, t: int, r: int, c: int, rep: int = 0) -> list[int]:
        key = [self.seed, t, r, c] if k == 0 else [self.seed, t, r, c, 2, k]
        return key + [3, rep] if rep else key

    def plan(
        self, cube: np.ndarray, t: np.ndarray, r: np.ndarray, c: np.ndarray,
        n_time: Sequence[int], rep: np.ndarray | None = None,
    ) -> CloudPlan:  # fmt: skip
        """Where each patch's laid mask comes from (``CloudPlan``); ``n_time``: dates per
        cube; ``rep``: each patch's copy number (default all 0)."""
        n = len(t)
        date, lent, synth = (np.full(n, -1, dtype=np.int64) for _ in range(3))
        rep = np.zeros(n, dtype=np.int64) if rep is None else rep
        borrow = set(self.borrow)
        for i, (k, tt, rr, cc, q) in enumerate(zip(cube, t, r, c, rep, strict=True)):
            k, tt = int(k), int(tt)
            if k not in borrow and n_time[k] < 2:
                continue  # no other date to take a mask from
            rng = np.random.default_rng(self._key(k, tt, int(rr), int(cc), int(q)))
            if rng.random() >= self.rate:
                continue
            if k not in borrow:
                d = int(rng.integers(0, n_time[k] - 1))
                date[i] = d + (d >= tt)  # any date but its own
            elif self.lent:
                lent[i] = int(rng.integers(0, len(self.lent)))
            else:
                synth[i] = int(rng.integers(0, 2**31))
        return CloudPlan(date, lent, synth)

    def donors(self, t: np.ndarray, r: np.ndarray, c: np.ndarray, n_time: int) -> np.ndarray:
        """Per patch of one cube (origins ``t``, ``r``, ``c``), the date whose cloud mask it
        gets; -1 for none (its own mask only)."""
        t = np.asarray(t)
        return self.plan(np.zeros(len(t), dtype=np.int64), t, r, c, [n_time]).date


#: A cube lends clouds (and needs none lent) when at least this share of its sampled train
#: windows x dates has ``LEND_MIN_COVER`` or more of cloud; a lent window has cover within
#: [LEND_MIN_COVER, LEND_MAX_COVER] (a whole date without S2 teaches nothing another cube's
#: own date gaps do not); windows sampled per cube at most.
MIN_CLOUDY_SHARE = 0.05
LEND_MIN_COVER, LEND_MAX_COVER = 0.05, 0.9
LEND_MAX_WINDOWS = 256


def lend_cloud_windows(
    sources: Sequence[CubeSource],
    index: pd.DataFrame,
    mask_pos: int,
    patch_px: int,
    *,
    seed: int = 0,
    max_windows: int = LEND_MAX_WINDOWS,
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int], ...], dict[int, float]]:
    """Which cubes need clouds lent, the cloudy windows the others lend, and each cube's
    share of cloudy windows x dates (module doc of ``CloudMasks``).

    Samples up to ``max_windows`` train-patch windows of each cube (seeded) and reads its
    cloud mask (reader position ``mask_pos``) at every date.
    """
    train = index[index["split"] == "train"]
    cubes = row_cubes(train)
    share: dict[int, float] = {}
    windows: dict[int, list[tuple[int, int, int, int]]] = {}
    for k, src in enumerate(sources):
        pos = train.loc[cubes == k, ["row", "col"]].drop_duplicates().to_numpy(dtype=np.int64)
        if len(pos) > max_windows:
            pos = pos[np.sort(np.random.default_rng([seed, k]).permutation(len(pos))[:max_windows])]
        arr, _ = _store_array(src.path)
        got, n = [], 0
        for tt in range(src.n_time):
            tt_ = np.full(len(pos), tt, dtype=np.int64)
            m = _read_windows(arr, [src.band_idx[mask_pos]], tt_, pos[:, 0], pos[:, 1], patch_px)
            cover = (np.nan_to_num(m[:, 0], nan=1.0) > 0.5).mean(axis=(1, 2))
            n += len(cover)
            got += [
                (k, tt, int(rr), int(cc), float(f))
                for (rr, cc), f in zip(pos, cover, strict=True)
                if f >= LEND_MIN_COVER
            ]
        share[k] = len(got) / max(n, 1)
        windows[k] = [w[:4] for w in got if w[4] <= LEND_MAX_COVER]
    borrow = tuple(k for k in range(len(sources)) if share[k] < MIN_CLOUDY_SHARE)
    lent = tuple(w for k in range(len(sources)) if k not in borrow for w in windows[k])
    return borrow, lent, share


def lay_cloud_masks(cloudy: np.ndarray, donor_mask: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """Raw ``cloudy`` patches (N, Co + 1, P, P: reflectance, mask) with, where ``donors`` >= 0,
    the mask united with ``donor_mask`` (those patches' donor masks, (n, 1, P, P), in order).
    The reflectance stays: ``normalise_cloudy`` zeroes it wherever the mask is set."""
    out = np.array(cloudy, dtype=np.float32, copy=True)
    sel = np.flatnonzero(donors >= 0)
    if sel.size:
        own = np.nan_to_num(out[sel, -MASK_CH:], nan=1.0) > 0.5
        other = np.nan_to_num(donor_mask, nan=1.0) > 0.5
        out[sel, -MASK_CH:] = (own | other).astype(np.float32)
    return out


@dataclass(frozen=True, eq=False)
class ReferenceContext:
    """Fit each training patch's scene-fit reference (``models.reference``) over a
    ``ctx_px`` window around it, as inference fits it over its window.

    A model with ``model.reference: scene_fit`` computes its reference from the window it
    is given. Trained on small patches (32 px where a 120-px grid allows no more) the fit is
    noisy; at inference, over 128-256 px windows, it is not, and a net that learnt to undo a
    noisy fit undoes a good one (on the real sets: 0.96 x the per-date ridge with the net
    against 0.63 x for its reference alone). So the stream fits each patch's reference over
    the window inference would give it: ``ctx_px`` square centred on the patch, shifted
    inside the grid (the grid's side where it is smaller), on the same standardised inputs
    (``data.inputs.model_inputs``) and the same clouds (a donor date's over the window,
    ``context_reference``; else the patch's laid mask and the date's own elsewhere). The
    splits nest (``labels``: split code per ``block_px`` block of each cube,
    ``data.index.assign_blocks``): a train patch's fit sees train pixels only, so no held-out
    pixel shapes a training reference; a val patch's sees train and val, a test patch's all,
    as inference sees every clear pixel around a block; blocks of no split (the grid's edge)
    are seen by all. Fitted on its own split's few pixels, a val patch's reference erred
    more than inference's, and the validation score, the gate and the uncertainty calibration
    measured that worse fit. The result travels as batch key ``ref`` and the model takes it
    instead of fitting on the patch (``ReferenceGenerator.forward(x, ref)``)."""

    ctx_px: int
    input_set: str
    block_px: tuple[int, ...]  # per cube
    labels: tuple[np.ndarray, ...]  # per cube, (n_block_rows, n_block_cols) split codes
    #: Also the reference's own error over the context (``models.reference.
    #: reference_error``, batch key ``ref_err``): what the uncertainty calibration reads.
    with_error: bool = False

    def window(self, r: int, c: int, p: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """(row, col, height, width) of the context of the patch at (r, c) in a grid of
        ``shape``."""
        side = max(self.ctx_px, p)
        h, w = min(side, shape[0]), min(side, shape[1])
        r0 = min(max(r + p // 2 - h // 2, 0), shape[0] - h)
        c0 = min(max(c + p // 2 - w // 2, 0), shape[1] - w)
        return r0, c0, h, w

    def foreign(self, k: int, r0: int, c0: int, h: int, w: int, r: int, c: int) -> np.ndarray:
        """(h, w) bool: the pixels of the window at (r0, c0) outside the split of the patch
        at (r, c) in cube ``k``."""
        b, lab = self.block_px[k], self.labels[k]
        rows, cols = np.arange(r0, r0 + h) // b, np.arange(c0, c0 + w) // b
        return lab[np.ix_(rows, cols)] > lab[r // b, c // b]


def context_reference(
    ctx: ReferenceContext,
    sources: Sequence[CubeSource],
    cube: np.ndarray,
    t: np.ndarray,
    r: np.ndarray,
    c: np.ndarray,
    patch_cloudy: np.ndarray | None,
    prior_gaps: np.ndarray | None,
    donor_dates: np.ndarray | None = None,
    *,
    n_sar: int,
    n_opt: int,
    aux: Mapping,
    norm: Mapping,
    patch_px: int,
) -> dict[str, np.ndarray]:
    """``{"ref": (N, Co, P, P) float32}``: each patch's reference fitted over its context
    (``ReferenceContext``), and with ``ctx.with_error`` its error there (``"ref_err"``, the
    same shape); ``patch_cloudy``: the patches' raw cloudy S2 with their laid masks,
    ``prior_gaps``: the patches whose prior is withheld; ``donor_dates``: per patch, the
    date of its own cube whose cloud mask it got (``CloudPlan.date``, -1 none).

    A donor date's mask is laid over the whole window, not only the patch: a real cloud
    hides the land around the patch too, and a fit that kept it saw land that inference's
    fit under a real cloud does not. A lent window or a synthetic
    shape covers the patch only, and so does a donor that hides more than
    ``LEND_MAX_COVER`` of the window (a date without S2 is no cloud shape: laid over the
    window it left the fit nothing, and the validation MAE went from 0.012 to 0.07)."""
    from sar2opt.data.inputs import model_inputs
    from sar2opt.models.reference import input_slices

    p = patch_px
    out = {key: np.empty((len(t), n_opt, p, p), dtype=np.float32)
           for key in (REF_KEY, *((REF_ERR_KEY,) if ctx.with_error else ()))}  # fmt: skip
    for k in np.unique(cube):
        k = int(k)
        src, sel = sources[k], np.flatnonzero(cube == k)
        arr, _ = _store_array(src.path)
        shape = (int(arr.shape[-2]), int(arr.shape[-1]))
        wins = np.array([ctx.window(int(r[i]), int(c[i]), p, shape) for i in sel], dtype=np.int64)
        h, w = int(wins[0, 2]), int(wins[0, 3])
        offs = np.stack([r[sel] - wins[:, 0], c[sel] - wins[:, 1]], axis=1)  # patch in window
        raw = _read_windows(arr, list(src.band_idx), t[sel], wins[:, 0], wins[:, 1], (h, w))
        parts = _split_raw(raw, n_sar, n_opt, aux)
        laid = np.zeros(len(sel), dtype=bool)
        if donor_dates is not None and "cloudy" in parts:  # a donor date: over the window
            has = np.flatnonzero(donor_dates[sel] >= 0)
            if has.size:
                pos = _mask_pos(n_sar, n_opt, aux)
                m = _read_windows(arr, [src.band_idx[pos]], donor_dates[sel][has],
                                  wins[has, 0], wins[has, 1], (h, w))  # fmt: skip
                donor = np.nan_to_num(m, nan=1.0) > 0.5
                cloud = donor.mean(axis=(1, 2, 3)) <= LEND_MAX_COVER  # not a date without S2
                has, donor = has[cloud], donor[cloud]
                own = np.nan_to_num(parts["cloudy"][has, -MASK_CH:], nan=1.0) > 0.5
                parts["cloudy"][has, -MASK_CH:] = (own | donor).astype(np.float32)
                laid[has] = True
        for j, i in enumerate(sel):
            dr, dc = (int(v) for v in offs[j])
            mask = parts["cloudy"][j, -MASK_CH:]
            if patch_cloudy is not None and not laid[j]:  # the patch's laid clouds
                mask[:, dr : dr + p, dc : dc + p] = patch_cloudy[i, -MASK_CH:]
            foreign = ctx.foreign(k, int(wins[j, 0]), int(wins[j, 1]), h, w, int(r[i]), int(c[i]))
            mask[:, foreign] = 1.0  # another split's pixels stay out of the fit
            if prior_gaps is not None and prior_gaps[i] and "prior" in parts:
                parts["prior"][j] = np.nan  # withheld: inference's missing prior
        keys = ("sar", *(key for key in AUX_KEYS if key in parts))
        x, _ = model_inputs({key: parts[key] for key in keys}, norm, ctx.input_set)
        slices = input_slices(ctx.input_set, x.shape[1], n_opt)
        got = window_references(x, slices, n_opt, ctx.with_error)
        for j, i in enumerate(sel):
            dr, dc = (int(v) for v in offs[j])
            for key, v in got.items():
                out[key][i] = v[j, :, dr : dr + p, dc : dc + p]
    return out


def window_references(
    x: np.ndarray, slices: Mapping[str, slice], n_opt: int, with_error: bool = False
) -> dict[str, np.ndarray]:
    """``{"ref": (N, Co, H, W) float32}`` of N standardised context windows x (the scene fit
    with its residual spread, ``models.reference.scene_reference``), and with ``with_error``
    its error (``"ref_err"``), ``REF_CHUNK`` windows at a time: each window's fit is its own,
    and the fits of a whole read at once held several float64 copies of every window
    (``benchmarks/bench_context_reference.py``)."""
    import torch

    from sar2opt.models.reference import reference_error, scene_reference

    n, _, h, w = x.shape
    keys = (REF_KEY, *((REF_ERR_KEY,) if with_error else ()))
    got = {key: np.empty((n, n_opt, h, w), np.float32) for key in keys}
    for a in range(0, n, REF_CHUNK):
        xt = torch.from_numpy(x[a : a + REF_CHUNK])
        fit, ref = scene_reference(xt, slices)
        got[REF_KEY][a : a + len(xt)] = ref.numpy()
        if with_error:
            got[REF_ERR_KEY][a : a + len(xt)] = reference_error(xt, fit, slices).numpy()
    return got


def _stat(norm: Mapping, key: str) -> np.ndarray:
    return np.asarray(norm[key], dtype=np.float32).reshape(1, -1, 1, 1)


def _normalised(parts: dict[str, np.ndarray], norm: Mapping) -> dict[str, np.ndarray]:
    """The trainer's model-ready arrays (module doc), float32 arithmetic as in trainer.py."""
    mask = parts["mask"]
    opt_m, opt_s = _stat(norm, "opt_mean"), _stat(norm, "opt_std")
    opt = np.where(mask, parts["opt"], np.float32(0.0))
    # the model's inputs (sar, prior, dem): one definition with inference (``normalise_input``)
    out = {
        "sar": normalise_input("sar", parts["sar"], norm),
        "opt": np.where(mask, (opt - opt_m) / opt_s, np.float32(0.0)),
        "mask": mask.astype(np.float32),
    }
    for k in AUX_KEYS:
        if k in parts:
            out[k] = normalise_input(k, parts[k], norm)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _mask_pos(n_sar: int, n_opt: int, aux: Mapping) -> int:
    """The reader position of the same-date S2's cloud mask: the cloudy bands lead the aux
    and the mask ends them."""
    return n_sar + n_opt + len(aux["cloudy"])


def _laid_masks(
    plan: CloudPlan, sources: Sequence[CubeSource], lent: Sequence[tuple[int, int, int, int]],
    cube: np.ndarray, r: np.ndarray, c: np.ndarray, mask_pos: int, p: int,
) -> np.ndarray:  # fmt: skip
    """The masks ``plan`` lays, (n, 1, P, P) for its patches with one, in order."""
    has = np.flatnonzero(plan.any)
    out = np.zeros((len(has), 1, p, p), dtype=np.float32)
    for j, i in enumerate(has):
        if plan.synthetic[i] >= 0:
            out[j, 0] = synthetic_cloud_mask(int(plan.synthetic[i]), p)
    for k, src in enumerate(sources):
        arr = None
        own = has[(plan.date[has] >= 0) & (cube[has] == k)]
        if own.size:
            arr, _ = _store_array(src.path)
            m = _read_windows(arr, [src.band_idx[mask_pos]], plan.date[own], r[own], c[own], p)
            out[np.searchsorted(has, own)] = m
        from_k = [i for i in has if plan.lent[i] >= 0 and lent[plan.lent[i]][0] == k]
        if from_k:
            arr = arr if arr is not None else _store_array(src.path)[0]
            w = np.array([lent[plan.lent[i]] for i in from_k], dtype=np.int64)
            m = _read_windows(arr, [src.band_idx[mask_pos]], w[:, 1], w[:, 2], w[:, 3], p)
            out[np.searchsorted(has, from_k)] = m
    return out


def _read_batch(
    batch: Mapping[str, np.ndarray],
    *,
    sources: Sequence[CubeSource],
    n_sar: int,
    n_opt: int,
    aux: Mapping,
    norm: Mapping,
    patch_px: int,
    cloud_masks: CloudMasks | None = None,
    reference_context: ReferenceContext | None = None,
) -> dict[str, np.ndarray]:
    """map_batches function: index rows (time, row, col[, cube]) -> normalised patches, same
    order, each read from its cube (with ``cloud_masks``: clouds laid on the ``cloudy`` input;
    with ``reference_context``: key ``ref``, each patch's reference over its context)."""
    t, r, c = (np.asarray(batch[k], dtype=np.int64) for k in ("time", "row", "col"))
    cube, rep = row_cubes(batch), row_repeats(batch)
    width = len(sources[0].band_idx)
    raw = np.empty((len(t), width, patch_px, patch_px), dtype=np.float32)
    for k in np.unique(cube):
        src, sel = sources[int(k)], cube == k
        arr, _ = _store_array(src.path)
        raw[sel] = _read_windows(arr, list(src.band_idx), t[sel], r[sel], c[sel], patch_px)
    parts = _split_raw(raw, n_sar, n_opt, aux)
    plan = None
    if cloud_masks is not None and "cloudy" in aux:
        plan = cloud_masks.plan(cube, t, r, c, [s.n_time for s in sources], rep)
        if plan.any.any():
            mask_pos = _mask_pos(n_sar, n_opt, aux)
            laid = _laid_masks(plan, sources, cloud_masks.lent, cube, r, c, mask_pos, patch_px)
            donors = np.where(plan.any, 0, -1)
            parts["cloudy"] = lay_cloud_masks(parts["cloudy"], laid, donors)
    out = _normalised(parts, norm)
    gaps = None
    if cloud_masks is not None and cloud_masks.prior_gap_rate > 0 and "prior" in out:
        gaps = cloud_masks.prior_gaps(cube, t, r, c, rep)
        out["prior"][gaps] = 0.0  # standardised band mean: inference's missing prior
    if reference_context is not None:
        out |= context_reference(
            reference_context, sources, cube, t, r, c, parts.get("cloudy"), gaps,
            None if plan is None else plan.date,
            n_sar=n_sar, n_opt=n_opt, aux=aux, norm=norm, patch_px=patch_px,
        )  # fmt: skip
    return out


def _locality_order(index: pd.DataFrame) -> np.ndarray:
    """Positions of ``index`` sorted by (repeat, cube, time, block, row, col): neighbours
    read together, and the copies of a patch (``index.balance_cubes``) in different reads."""
    keys = [k for k in ("repeat", "cube", "time", "block", "row", "col") if k in index.columns]
    return np.lexsort([index[k].to_numpy() for k in reversed(keys)])


def read_patches(
    cube_path: str | Path | Sequence[str | Path],
    rows: pd.DataFrame,
    *,
    sar_bands: Sequence[str],
    opt_bands: Sequence[str],
    aux: Mapping[str, list[str]],
    norm: Mapping[str, list[float]],
    patch_px: int,
    cloud_masks: CloudMasks | None = None,
    reference_context: ReferenceContext | None = None,
) -> dict[str, np.ndarray]:
    """Normalised patches (N, C, P, P) for ``rows`` (index rows, in their order): module doc.

    The pure reader behind :func:`patch_dataset`, usable without Ray. Without
    ``cloud_masks`` a patch is exactly the cube's (what inference reads for that window);
    ``reference_context`` adds each patch's context reference (key ``ref``).
    Several cubes: ``rows`` name theirs in column ``cube`` (position in ``cube_path``);
    copies of a patch (``index.balance_cubes``) their number in column ``repeat``.
    """
    missing = [k for k in ("time", "row", "col") if k not in rows.columns]
    if missing:
        raise PatchError(f"index rows lack column(s) {missing}; use build_patch_index")
    sources = cube_sources(cube_path, sar_bands, opt_bands, aux)
    order = _locality_order(rows)
    keys = ("time", "row", "col", *(k for k in ("cube", "repeat") if k in rows.columns))
    batch = {k: rows[k].to_numpy()[order] for k in keys}
    got = _read_batch(
        batch, sources=sources, n_sar=len(sar_bands), n_opt=len(opt_bands), aux=aux,
        norm=norm, patch_px=patch_px, cloud_masks=cloud_masks,
        reference_context=reference_context,
    )  # fmt: skip
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return {k: v[inv] for k, v in got.items()}


class _Moments:
    """Per-band count / mean / M2 in float64, merged batch by batch (Chan et al.)."""

    def __init__(self, n_bands: int) -> None:
        self.n = np.zeros(n_bands)
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)

    def add(self, x: np.ndarray, sel: np.ndarray | None = None) -> None:
        """x (N, C, P, P); sel (N, 1, P, P) bool or None: pixels that count."""
        flat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).astype(np.float64)
        ok = np.isfinite(flat).all(axis=0)
        if sel is not None:
            ok &= sel.reshape(-1)
        vals = flat[:, ok]
        nb = vals.shape[1]
        if nb == 0:
            return
        mb = vals.mean(axis=1)
        m2b = ((vals - mb[:, None]) ** 2).sum(axis=1)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n

    def result(self, what: str) -> tuple[list[float], list[float]]:
        if not (self.n > 0).all():
            raise PatchError(f"no valid {what} pixels in the training patches")
        std = np.maximum(np.sqrt(self.m2 / self.n), MIN_STD)
        return self.mean.astype(np.float32).tolist(), std.astype(np.float32).tolist()


def norm_stats(
    cube_path: str | Path | Sequence[str | Path],
    index: pd.DataFrame,
    sar_bands: Sequence[str],
    opt_bands: Sequence[str],
    aux: Mapping[str, list[str]],
    *,
    max_patches: int = 2048,
    seed: int = 0,
    patch_px: int | None = None,
) -> dict[str, list[float]]:
    """Per-band mean / std over the train split (module doc), for the checkpoint's ``norm``.

    A seeded sample of at most ``max_patches`` train patches is read ``STATS_BATCH`` at a
    time; moments accumulate in float64; optical over clear pixels only; SAR and DEM over all
    pixels. Keys: sar_mean, sar_std, opt_mean, opt_std (+ dem_mean, dem_std with a DEM). The
    prior has none of its own: it is optical reflectance and uses the opt statistics.
    ``patch_px`` defaults to ``index.attrs["patch_px"]`` (set by build_patch_index).
    Several cubes (index column ``cube``): one pool of moments over every cube's train split.
    """
    train = index[index["split"] == "train"]
    if len(train) == 0:
        raise PatchError("no train patches in the index: cannot compute normalisation statistics")
    if len(train) > max_patches:
        pick = np.random.default_rng(seed).choice(len(train), size=max_patches, replace=False)
        train = train.iloc[np.sort(pick)]
    train = train.iloc[_locality_order(train)]
    sources = cube_sources(cube_path, sar_bands, opt_bands, aux)
    p = int(patch_px or index.attrs.get("patch_px", 0))
    if p <= 0:
        raise PatchError("norm_stats needs patch_px (or an index from build_patch_index)")
    moments = {"sar": _Moments(len(sar_bands)), "opt": _Moments(len(opt_bands))}
    if "dem" in aux:
        moments["dem"] = _Moments(len(aux["dem"]))
    cubes = row_cubes(train)
    for k, src in enumerate(sources):
        arr, _ = _store_array(src.path)
        mine = train[cubes == k]
        t, r, c = (mine[key].to_numpy(dtype=np.int64) for key in ("time", "row", "col"))
        for i in range(0, len(mine), STATS_BATCH):
            sl = slice(i, i + STATS_BATCH)
            raw = _read_windows(arr, list(src.band_idx), t[sl], r[sl], c[sl], p)
            parts = _split_raw(raw, len(sar_bands), len(opt_bands), aux)
            moments["sar"].add(parts["sar"])
            moments["opt"].add(parts["opt"], parts["mask"])
            if "dem" in moments:
                moments["dem"].add(parts["dem"])
    out: dict[str, list[float]] = {}
    for k, m in moments.items():
        out[f"{k}_mean"], out[f"{k}_std"] = m.result(k)
    return out


def stream_order(index: pd.DataFrame, rows_per_read: int, shuffle_seed: int | None) -> np.ndarray:
    """Row positions in streaming order: locality groups of ``rows_per_read``, shuffled by seed.

    With a seed, whole read groups are permuted and rows permuted inside each group, so reads
    keep their locality while batches mix places and dates (add a local shuffle buffer in
    ``iter_torch_batches`` for more).
    """
    order = _locality_order(index)
    if shuffle_seed is None:
        return order
    rng = np.random.default_rng(shuffle_seed)
    groups = [order[i : i + rows_per_read] for i in range(0, len(order), rows_per_read)]
    return np.concatenate([rng.permutation(groups[g]) for g in rng.permutation(len(groups))])


def patch_dataset(
    cube_path: str | Path | Sequence[str | Path],
    index: pd.DataFrame,
    *,
    sar_bands: Sequence[str],
    opt_bands: Sequence[str],
    aux: Mapping[str, list[str]],
    norm: Mapping[str, list[float]],
    patch_px: int,
    rows_per_read: int = 32,
    num_cpus: float = 0.25,
    shuffle_seed: int | None = None,
    concurrency: int | None = None,
    cloud_masks: CloudMasks | None = None,
    reference_context: ReferenceContext | None = None,
) -> ray.data.Dataset:
    """A streaming Ray Dataset of normalised patches for the rows of ``index`` (module doc).

    Pass one split's rows. With ``shuffle_seed`` the read groups are shuffled once
    (:func:`stream_order`) and their blocks reordered at every execution (epoch). The
    dataset holds index rows only (time, row, col); the patches are
    read by ``map_batches`` tasks of ``num_cpus`` CPUs, ``rows_per_read`` patches per read.
    Row order across tasks is not preserved unless the DataContext asks for it. Read tasks
    in flight are capped by the free CPUs / ``num_cpus`` and by ``concurrency`` when given:
    memory depends on that cap and ``rows_per_read``, not on the index size.
    ``cloud_masks``: synthetic clouds on the ``cloudy`` input (cloud-removal training);
    ``reference_context``: each patch's reference over its context (key ``ref``).
    Several cubes: ``index`` names each row's in column ``cube`` (position in ``cube_path``).
    """
    import ray.data

    if len(index) == 0:
        raise PatchError("patch_dataset: the index has no rows (empty split?)")
    if rows_per_read <= 0:
        raise PatchError(f"rows_per_read must be positive, got {rows_per_read}")
    sources = cube_sources(cube_path, sar_bands, opt_bands, aux)
    order = stream_order(index, rows_per_read, shuffle_seed)
    cols = ["time", "row", "col", *(k for k in ("cube", "repeat") if k in index.columns)]
    rows = index[cols].iloc[order].reset_index(drop=True).astype(np.int64)
    step = rows_per_read * BATCHES_PER_BLOCK
    dfs = [rows.iloc[i : i + step] for i in range(0, len(rows), step)]
    ds = ray.data.from_pandas(dfs)
    if shuffle_seed is not None:
        ds = epoch_block_order(ds, shuffle_seed)
    return ds.map_batches(
        _read_batch,
        batch_size=rows_per_read,
        batch_format="numpy",
        num_cpus=num_cpus,
        concurrency=concurrency,
        fn_kwargs={
            "sources": sources,
            "n_sar": len(sar_bands),
            "n_opt": len(opt_bands),
            "aux": {k: list(v) for k, v in aux.items()},
            "norm": {k: list(v) for k, v in norm.items()},
            "patch_px": int(patch_px),
            "cloud_masks": cloud_masks,
            "reference_context": reference_context,
        },
    )


def epoch_block_order(ds: ray.data.Dataset, seed: int) -> ray.data.Dataset:
    """``ds`` with its blocks in a new order at every execution (each epoch), reproducible
    from ``seed`` (Ray reseeds with the execution index)."""
    from ray.data import RandomSeedConfig

    return ds.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))


def patch_bytes(n_channels: int, patch_px: int) -> int:
    """Bytes of one float32 patch of ``n_channels`` (sar, opt, mask and aux together)."""
    return 4 * n_channels * patch_px * patch_px


def cache_split(ds: ray.data.Dataset, shuffle_seed: int | None) -> ray.data.Dataset:
    """The split read once into the object store: the caller checks that it fits.

    Opening a streamed epoch costs Ray Data a new pass over the Zarr store (read tasks,
    ~1.5 s on a small split); a cached one only hands out blocks. The cache is cut into
    blocks of ``CACHE_BLOCK_ROWS`` patches, reordered every epoch when ``shuffle_seed`` is
    given (the loop's local shuffle buffer then mixes rows across blocks).
    """
    cached = ds.repartition(target_num_rows_per_block=CACHE_BLOCK_ROWS).materialize()
    return cached if shuffle_seed is None else epoch_block_order(cached, shuffle_seed)
