"""Patch index: one row per usable training patch, with a spatially disjoint split.

Training reads patches lazily from the cube store (``sar2opt.data.stream``); what it needs
up front is only *where* the usable patches are. :func:`build_patch_index` scans the cube one
date and one strip of block rows at a time (summed-area tables, ``sar2opt.ops``)
and returns a small ``pandas.DataFrame``, never the patches themselves.

Columns (``INDEX_COLUMNS``):

- ``time``, ``row``, ``col``: int index into the cube's time axis and pixel origin (top-left);
- ``clear_frac``: fraction of clear optical pixels in the patch;
- ``split``: ``"train"``, ``"val"`` or ``"test"``; ``block``: id of its split block
  (``block_row * n_block_cols + block_col``);
- ``x_min``, ``y_min``, ``x_max``, ``y_max``: patch bounds in the cube CRS (from the given
  affine ``transform``, else from the cube's regular x/y pixel-centre coordinates, else in
  pixel units when the cube has neither).

Splits. A random split of overlapping patches flatters validation: neighbours and other dates
of one place land on both sides. Instead the grid is cut into ``block_px`` squares (default 4 x
``patch_px``), and blocks that can hold a patch are shuffled with ``split_seed`` into test
(``test_frac``), val (``val_frac``) and train (the rest), each non-zero fraction getting at
least one block. A patch lies wholly inside one block (stride grid anchored at the block
origin) and is dropped when fewer than ``gap_px`` (default ``patch_px``) pixels separate it
from a block of another split, so two patches of different splits are at least ``gap_px``
apart, and every date of one place has the same split. A patch is valid when its clear
fraction is >= ``min_clear_frac`` and it has no non-finite SAR / DEM / prior / cloud mask
value and no non-finite optical value at a clear pixel (the rules of the in-memory reference
cutter in ``tests/helpers/patch_reference.py``). The same-date cloudy S2 of SC/SCO/SCOD may
be missing anywhere: its cloud mask says so, and the model is trained to fill there.

Sizes. ``patches.patch_px`` left unset derives patch, block, gap and stride from the grid
(:func:`resolve_patches`: the largest patch of ``AUTO_PATCH_PX`` giving ~10 blocks or more),
so a 120 px real scene trains with the defaults; sizes set explicitly that leave no train, val
or test block stop with one line naming the values to set. Several cubes trained together
(:func:`resolve_patches_common`) share one patch size, each cube cut into its own blocks;
:func:`split_blocks` lists the block ids of each split, which checkpoints record so that
evaluation scores each cube on its own held-out blocks (:func:`block_pixels`).

:func:`index_hash` fingerprints an index (stored in checkpoints, so a run says which patches
it saw); :func:`split_counts` counts patches per split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine

from sar2opt.config import AUTO_PATCH_PX, PatchSpec
from sar2opt.data.patches import (
    CLEAR_BAND,
    CLOUD_MASK_BAND,
    CLOUDY_PREFIX,
    DEM_BAND,
    PRIOR_PREFIX,
    PatchError,
)
from sar2opt.ops import summed_area, window_sum

SPLITS = ("train", "val", "test")
INDEX_COLUMNS = (
    "time", "row", "col", "clear_frac", "split", "block", "x_min", "y_min", "x_max", "y_max",
)  # fmt: skip
UNASSIGNED = -1  # block label of a block too small to hold a patch (grid edge)
STRIP_TARGET_PX = 512  # rows read per date at a time (whole block rows, at least one)
MIN_AUTO_BLOCKS = 10  # an auto layout is taken when it gives at least this many blocks

log = logging.getLogger(__name__)


def _layouts(p: int) -> tuple[tuple[int, int, int, int], ...]:
    """(patch, block, gap, stride) layouts for an auto patch of ``p`` px, preferred first:
    the classic one (blocks of 4 p, a p gap, stride p/2: the old defaults at 128 px), then a
    compact one for small grids (blocks of 1.5 p, a p/4 gap, stride p/8: every block still
    holds a patch p/4 away from each side, so splits never touch, and 5 x 5 positions)."""
    q = p // 4
    return ((p, 4 * p, p, p // 2), (p, p + 2 * q, q, max(1, p // 8)))


def usable_blocks(height: int, width: int, patch_px: int, block_px: int) -> int:
    """Blocks of ``block_px`` (from the grid origin) that can hold a ``patch_px`` patch."""
    ny = height // block_px + int(height % block_px >= patch_px)
    nx = width // block_px + int(width % block_px >= patch_px)
    return ny * nx


def _split_sizes(n: int, spec: PatchSpec) -> tuple[int, int, int]:
    """(test, val, train) block counts for ``n`` usable blocks (train may be < 1)."""
    n_test = max(int(spec.test_frac > 0), int(round(spec.test_frac * n)))
    n_val = max(int(spec.val_frac > 0), int(round(spec.val_frac * n)))
    return n_test, n_val, n - n_test - n_val


def _auto_layout(
    height: int, width: int, spec: PatchSpec, choices: Sequence[int] = AUTO_PATCH_PX
) -> tuple[int, int, int, int] | None:
    """The largest auto layout (patch sizes from ``choices``) with >= MIN_AUTO_BLOCKS
    blocks, else the one with the most blocks that still gives train, val and test a block
    each; None when none does. A block_px / gap_px / stride_px the user set is kept in every
    layout."""
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for p in choices:
        for lp, lb, lg, ls in _layouts(p):
            b = spec.block_px if spec.block_px is not None else lb
            g = spec.gap_px if spec.gap_px is not None else lg
            s = spec.stride_px if spec.stride_px is not None else ls
            if b < lp:
                continue
            n = usable_blocks(height, width, lp, b)
            if _split_sizes(n, spec)[2] < 1:
                continue
            if n >= MIN_AUTO_BLOCKS:
                return (lp, b, g, s)
            if best is None or n > best[0]:
                best = (n, (lp, b, g, s))
    return None if best is None else best[1]


def resolve_patches(spec: PatchSpec, height: int, width: int) -> PatchSpec:
    """``spec`` with every size set for a ``height`` x ``width`` px grid (deterministic, so
    training and evaluation derive the same split from the same grid).

    ``patch_px`` unset (auto): the largest of AUTO_PATCH_PX that cuts the grid into
    >= MIN_AUTO_BLOCKS split blocks (``_layouts``), logged. ``patch_px`` set: used as given
    (stride defaults to patch_px / 2, block and gap as documented in the module doc).
    """
    if spec.patch_px is not None:
        if spec.stride_px is None:
            return dataclasses.replace(spec, stride_px=max(1, spec.patch_px // 2))
        return spec
    layout = _auto_layout(height, width, spec)
    if layout is None:
        raise PatchError(
            f"a {height}x{width} px grid is too small to hold train, val and test blocks even "
            f"with {min(AUTO_PATCH_PX)} px patches; use a larger AOI"
        )
    p, b, g, s = layout
    log.info(
        "patches (auto for %dx%d px): patch_px %d, block_px %d, gap_px %d, stride_px %d, "
        "%d blocks", height, width, p, b, g, s, usable_blocks(height, width, p, b),
    )  # fmt: skip
    return dataclasses.replace(spec, patch_px=p, block_px=b, gap_px=g, stride_px=s)


def resolve_patches_common(spec: PatchSpec, shapes: Sequence[tuple[int, int]]) -> list[PatchSpec]:
    """``spec`` resolved for each (height, width) grid with ONE patch size, so the patches
    of several cubes batch together (multi-cube training).

    ``patch_px`` set: every grid uses it. Unset: each grid derives its layout
    (``resolve_patches``); when they differ, the smallest derived patch is used on every
    grid, each grid taking its best layout at that size (more, smaller blocks on a larger
    grid). A grid that cannot split at that size stops with one line saying what to set.
    """
    specs = [resolve_patches(spec, h, w) for h, w in shapes]
    sizes = sorted({int(s.patch_px) for s in specs})
    if len(sizes) <= 1 or spec.patch_px is not None:
        return specs
    p = sizes[0]
    out = []
    for (h, w), s in zip(shapes, specs, strict=True):
        if s.patch_px == p:
            out.append(s)
            continue
        layout = _auto_layout(h, w, spec, choices=(p,))
        if layout is None:
            raise PatchError(
                f"the cubes derive patch sizes {sizes} px and a {h}x{w} px grid cannot split "
                f"into train, val and test at {p} px: set patches.patch_px (one of {sizes})"
            )
        lp, b, g, st = layout
        out.append(dataclasses.replace(spec, patch_px=lp, block_px=b, gap_px=g, stride_px=st))
    return out


def split_blocks(height: int, width: int, spec: PatchSpec) -> dict[str, list[int]]:
    """Block ids (``block_row * n_block_cols + block_col``, as the index's ``block``) of
    each split: what a checkpoint records so evaluation scores only its held-out blocks."""
    labels = assign_blocks(height, width, spec).ravel()
    return {s: np.flatnonzero(labels == i).tolist() for i, s in enumerate(SPLITS)}


def block_pixels(height: int, width: int, block_px: int, blocks: Sequence[int]) -> np.ndarray:
    """(height, width) bool: the pixels of the given blocks (ids as in :func:`split_blocks`)."""
    nby, nbx = -(-height // block_px), -(-width // block_px)
    sel = np.zeros(nby * nbx, dtype=bool)
    sel[np.asarray(list(blocks), dtype=np.int64)] = True
    return sel.reshape(nby, nbx).repeat(block_px, 0).repeat(block_px, 1)[:height, :width]


def _suggest(height: int, width: int, spec: PatchSpec) -> str:
    """What to set so that a grid this size splits: the auto layout's values."""
    auto = _auto_layout(
        height,
        width,
        dataclasses.replace(spec, patch_px=None, block_px=None, gap_px=None, stride_px=None),
    )
    if auto is None:
        return "use a larger AOI"
    p, b, g, s = auto
    return (
        f"set patches.patch_px: {p}, block_px: {b}, gap_px: {g}, stride_px: {s} (or leave "
        "patch_px and block_px unset to derive them from the grid), or use a larger AOI"
    )


def block_size(spec: PatchSpec) -> int:
    """Split block side in pixels: ``spec.block_px``, or 4 x ``patch_px`` when unset (of a
    spec with ``patch_px`` set: ``resolve_patches``)."""
    return 4 * spec.patch_px if spec.block_px is None else spec.block_px


def gap_size(spec: PatchSpec) -> int:
    """Minimum pixels between patches of different splits: ``gap_px``, or ``patch_px``."""
    return spec.patch_px if spec.gap_px is None else spec.gap_px


def _check_spec(spec: PatchSpec) -> tuple[int, int, int, int]:
    if spec.patch_px is None or spec.stride_px is None:
        raise PatchError("patch sizes are unresolved: call resolve_patches(spec, height, width)")
    p, stride, b, g = spec.patch_px, spec.stride_px, block_size(spec), gap_size(spec)
    if p <= 0 or stride <= 0:
        raise PatchError(f"patch_px and stride_px must be positive, got {p}, {stride}")
    if b < p:
        raise PatchError(f"patches.block_px ({b}) must be at least patch_px ({p})")
    if g < 0:
        raise PatchError(f"patches.gap_px must be >= 0, got {g}")
    if spec.val_frac < 0 or spec.test_frac < 0 or spec.val_frac + spec.test_frac >= 1:
        raise PatchError(
            f"need val_frac >= 0, test_frac >= 0 and val_frac + test_frac < 1, got "
            f"{spec.val_frac}, {spec.test_frac}"
        )
    return p, stride, b, g


def assign_blocks(height: int, width: int, spec: PatchSpec) -> np.ndarray:
    """Split code per block, (n_block_rows, n_block_cols) int: index into SPLITS or UNASSIGNED.

    Blocks are ``block_px`` squares from the grid origin; those cut by the grid edge to less
    than ``patch_px`` hold no patch and stay UNASSIGNED. The usable ones are permuted with
    ``split_seed``: the first ``round(test_frac * n)`` (at least 1 if test_frac > 0) are test,
    the next ``round(val_frac * n)`` (likewise) val, the rest train. Sizes left unset are
    derived from the grid first (``resolve_patches``).
    """
    explicit = spec.patch_px is not None
    spec = resolve_patches(spec, height, width)
    p, _, b, _ = _check_spec(spec)
    nby, nbx = -(-height // b), -(-width // b)
    ext_y = np.minimum(b, height - np.arange(nby) * b)
    ext_x = np.minimum(b, width - np.arange(nbx) * b)
    usable = (ext_y[:, None] >= p) & (ext_x[None, :] >= p)
    n = int(usable.sum())
    n_test, n_val, _ = _split_sizes(n, spec)
    if n - n_test - n_val < 1:
        hint = _suggest(height, width, spec) if explicit else "use a larger AOI"
        raise PatchError(
            f"a {height}x{width} px grid has {n} usable {b} px block(s), too few for train + "
            f"val ({spec.val_frac}) + test ({spec.test_frac}); {hint}"
        )
    codes = np.full(n, SPLITS.index("train"), dtype=np.int64)
    perm = np.random.default_rng(spec.split_seed).permutation(n)
    codes[perm[:n_test]] = SPLITS.index("test")
    codes[perm[n_test : n_test + n_val]] = SPLITS.index("val")
    labels = np.full((nby, nbx), UNASSIGNED, dtype=np.int64)
    labels[usable] = codes
    return labels


def split_pixels(height: int, width: int, spec: PatchSpec, split: str = "test") -> np.ndarray:
    """(height, width) bool: the pixels of the blocks assigned to ``split``.

    Training patches lie wholly inside train blocks, so no pixel of a val or test block was
    ever seen in training: scores on a mosaic use these pixels (``evaluate.compare``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = resolve_patches(spec, height, width)
    b = block_size(spec)
    labels = assign_blocks(height, width, spec) == SPLITS.index(split)
    return labels.repeat(b, axis=0).repeat(b, axis=1)[:height, :width]


def _axis_starts(size: int, b: int, p: int, stride: int) -> np.ndarray:
    """Patch starts along one axis: a stride grid from each block origin, patch inside block."""
    offs = np.arange(0, b - p + 1, stride)
    starts = (np.arange(-(-size // b))[:, None] * b + offs[None, :]).ravel()
    ends_in_block = np.minimum((starts // b + 1) * b, size)
    return starts[starts + p <= ends_in_block]


def candidate_patches(
    height: int, width: int, spec: PatchSpec, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, block id, split code) of every patch position that respects the split gap.

    A position is kept when its block is assigned and no block of another split intersects
    the patch grown by ``gap_px`` on every side (block-level summed-area table: exact, and
    cheap on a continental grid since blocks are few).
    """
    spec = resolve_patches(spec, height, width)
    p, stride, b, g = _check_spec(spec)
    rs, cs = _axis_starts(height, b, p, stride), _axis_starts(width, b, p, stride)
    r, c = (a.ravel() for a in np.meshgrid(rs, cs, indexing="ij"))
    bi, bj = r // b, c // b
    code = labels[bi, bj]
    keep = code != UNASSIGNED
    r, c, bi, bj, code = r[keep], c[keep], bi[keep], bj[keep], code[keep]
    # Block range touched by the patch grown by g pixels (clipped to the grid).
    i0, i1 = np.maximum(r - g, 0) // b, np.minimum(r + p - 1 + g, height - 1) // b
    j0, j1 = np.maximum(c - g, 0) // b, np.minimum(c + p - 1 + g, width - 1) // b
    ok = np.ones(len(r), dtype=bool)
    for s in range(len(SPLITS)):
        other = ((labels != UNASSIGNED) & (labels != s)).astype(np.int64)
        near = window_sum(summed_area(other), i0, j0, i1 + 1, j1 + 1)
        ok &= (code != s) | (near == 0)
    block = bi * labels.shape[1] + bj
    return r[ok], c[ok], block[ok], code[ok]


def _grid_transform(cube: xr.DataArray) -> Affine:
    """Affine of the cube's pixel edges from regular x/y centre coords; pixel units without."""
    if "x" in cube.coords and "y" in cube.coords and cube.sizes["x"] > 1 and cube.sizes["y"] > 1:
        x, y = cube["x"].values.astype(float), cube["y"].values.astype(float)
        dx, dy = x[1] - x[0], y[1] - y[0]
        return Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)
    return Affine.identity()


def _aux_bands(
    opt_bands: list[str],
    input_set: str,
    dem_band: str,
    prior_bands: Sequence[str] | None,
    cloudy_bands: Sequence[str] | None = None,
) -> tuple[list[str], int]:
    """The input set's extra cube bands, and how many of them lead (the cloudy S2's
    reflectance) that may be NaN."""
    from sar2opt.data.inputs import uses_cloudy, uses_dem, uses_prior  # lazy: imports torch

    out: list[str] = []
    n_free = 0
    if uses_cloudy(input_set):
        cloudy = (
            [CLOUDY_PREFIX + b for b in opt_bands] + [CLOUD_MASK_BAND]
            if not cloudy_bands
            else list(cloudy_bands)
        )
        if len(cloudy) != len(opt_bands) + 1:
            raise PatchError(
                f"{len(cloudy)} cloudy bands for {len(opt_bands)} optical bands + a mask"
            )
        out += cloudy
        n_free = len(opt_bands)
    if uses_prior(input_set):
        prior = [PRIOR_PREFIX + b for b in opt_bands] if prior_bands is None else list(prior_bands)
        if len(prior) != len(opt_bands):
            raise PatchError(f"{len(prior)} prior bands for {len(opt_bands)} optical bands")
        out += prior
    if uses_dem(input_set):
        out.append(dem_band)
    return out, n_free


def build_patch_index(
    cube: xr.DataArray,
    sar_bands: Sequence[str],
    opt_bands: Sequence[str],
    spec: PatchSpec,
    *,
    input_set: str = "S",
    dem_band: str = DEM_BAND,
    prior_bands: Sequence[str] | None = None,
    transform: Affine | None = None,
    cloudy_bands: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every usable patch of ``cube`` (time, band, y, x), with split and bounds (module doc).

    Reads one date and one strip of whole block rows at a time (patches never cross a block
    row), so memory is bounded by a strip, not the cube. Raises PatchError when a split that
    should exist (train always; val / test when their fraction is > 0) has no valid patch.
    """
    sar_bands, opt_bands = list(sar_bands), list(opt_bands)
    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise PatchError(f"cube dims must be (time, band, y, x), got {cube.dims}")
    aux, n_free = _aux_bands(opt_bands, input_set, dem_band, prior_bands, cloudy_bands)
    have = [str(b) for b in cube["band"].values]
    bands = [*sar_bands, *opt_bands, CLEAR_BAND, *aux]
    missing = [b for b in bands if b not in have]
    if missing:
        hint = " (build the cube with cube.cloudy: true)" if n_free else ""
        raise PatchError(
            f"cube lacks band(s) {missing} (input set {input_set}){hint}; it has {have}"
        )
    n_t, height, width = cube.sizes["time"], cube.sizes["y"], cube.sizes["x"]
    spec = resolve_patches(spec, height, width)
    p, _, b, _ = _check_spec(spec)
    labels = assign_blocks(height, width, spec)
    r_all, c_all, blk_all, code_all = candidate_patches(height, width, spec, labels)
    cs, co = len(sar_bands), len(opt_bands)
    strip = max(1, STRIP_TARGET_PX // b) * b
    sel = cube.sel(band=bands)
    parts: list[pd.DataFrame] = []
    for t in range(n_t):
        for y0 in range(0, height, strip):
            in_strip = (r_all >= y0) & (r_all < y0 + strip)
            if not in_strip.any():
                continue
            y1 = min(y0 + strip, height)
            arr = np.asarray(sel.isel(time=t, y=slice(y0, y1)).values, dtype=np.float32)
            clear = np.nan_to_num(arr[cs + co], nan=0.0) > 0.5
            sar_ok = np.isfinite(arr[:cs]).all(axis=0)
            opt_ok = np.isfinite(arr[cs : cs + co]).all(axis=0) | ~clear
            aux_ok = np.isfinite(arr[cs + co + 1 + n_free :]).all(axis=0)
            bad = (~sar_ok | ~opt_ok | ~aux_ok).astype(np.int64)
            r, c = r_all[in_strip] - y0, c_all[in_strip]
            n_clear = window_sum(summed_area(clear.astype(np.int64)), r, c, r + p, c + p)
            frac = n_clear / (p * p)
            n_bad = window_sum(summed_area(bad), r, c, r + p, c + p)
            ok = (n_bad == 0) & (frac >= spec.min_clear_frac)
            if not ok.any():
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "time": np.full(int(ok.sum()), t, dtype=np.int64),
                        "row": r_all[in_strip][ok].astype(np.int64),
                        "col": c[ok].astype(np.int64),
                        "clear_frac": frac[ok].astype(np.float64),
                        "code": code_all[in_strip][ok],
                        "block": blk_all[in_strip][ok].astype(np.int64),
                    }
                )
            )
    cols = ["time", "row", "col", "clear_frac", "code", "block"]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    df["split"] = np.asarray(SPLITS, dtype=object)[df.pop("code").to_numpy(dtype=np.int64)]
    tf = _grid_transform(cube) if transform is None else transform
    rr, cc = df["row"].to_numpy(dtype=float), df["col"].to_numpy(dtype=float)
    xs = [tf.a * (cc + dc) + tf.b * (rr + dr) + tf.c for dr in (0, p) for dc in (0, p)]
    ys = [tf.d * (cc + dc) + tf.e * (rr + dr) + tf.f for dr in (0, p) for dc in (0, p)]
    df["x_min"], df["x_max"] = np.min(xs, axis=0), np.max(xs, axis=0)
    df["y_min"], df["y_max"] = np.min(ys, axis=0), np.max(ys, axis=0)
    df = df[list(INDEX_COLUMNS)].sort_values(["time", "row", "col"], ignore_index=True)

    counts = split_counts(df)
    wanted = {"train": True, "val": spec.val_frac > 0, "test": spec.test_frac > 0}
    for s in SPLITS:
        if wanted[s] and counts[s] == 0:
            n_blocks = int((labels == SPLITS.index(s)).sum())
            raise PatchError(
                f"no {s} patches: {n_blocks} {s} block(s) of {b} px in a {n_t}x{height}x{width} "
                f"cube, patch {p} px, gap {gap_size(spec)} px, min_clear_frac "
                f"{spec.min_clear_frac}; use a larger or less cloudy AOI, or change "
                "patches.split_seed / block_px / gap_px / min_clear_frac"
            )
    df.attrs.update(
        patch_px=p, stride_px=spec.stride_px, block_px=b, gap_px=gap_size(spec),
        split_seed=spec.split_seed, cube_shape=[n_t, height, width],
    )  # fmt: skip
    return df


def index_hash(index: pd.DataFrame) -> str:
    """sha256 hex of the index content: known columns first, then extras by name, rows sorted.

    Row order and ``DataFrame.attrs`` do not matter; any changed value does.
    """
    known = [c for c in INDEX_COLUMNS if c in index.columns]
    cols = known + sorted(c for c in index.columns if c not in INDEX_COLUMNS)
    canon = index[cols].sort_values(cols, kind="mergesort", ignore_index=True)
    text = canon.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def balance_cubes(rows: pd.DataFrame, power: float) -> pd.DataFrame:
    """One split's rows with each cube's patches repeated so that its share of an epoch goes
    as (its patches) ** ``power``: 1 = as indexed, 0.5 = as the square root, 0 = equal.

    Several cubes trained together weigh by their patch counts: a 256-px chip of 12 months
    gives 3,360 patches, a 120-px scene of 2 dates 238, and the small scene barely moves the
    net. The biggest cube is read once; a smaller one ``round((n_max / n) ** (1 - power))``
    times, each copy marked in column ``repeat`` (its laid clouds and withheld priors are
    drawn apart: ``data.stream.CloudMasks``). Without column ``cube``, ``rows`` unchanged.
    """
    if not 0 <= power <= 1:
        raise PatchError(f"train.cube_balance must be in [0, 1], got {power}")
    if "cube" not in rows.columns or power == 1 or rows["cube"].nunique() < 2:
        return rows
    counts = rows["cube"].value_counts()
    n_max = int(counts.max())
    parts = []
    for k, n in counts.sort_index().items():
        mine = rows[rows["cube"] == k]
        for rep in range(max(1, round((n_max / int(n)) ** (1 - power)))):
            parts.append(mine.assign(repeat=rep))
    return pd.concat(parts, ignore_index=True)


def split_counts(index: pd.DataFrame) -> dict[str, int]:
    """Patches per split, every split in SPLITS present (0 when empty)."""
    vc = index["split"].value_counts()
    return {s: int(vc.get(s, 0)) for s in SPLITS}
