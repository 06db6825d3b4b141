"""Patch index: brute-force validity, spatially disjoint splits with a gap, bounds, hashing."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from affine import Affine

from sar2opt.config import PatchSpec
from sar2opt.data.index import (
    INDEX_COLUMNS,
    SPLITS,
    UNASSIGNED,
    assign_blocks,
    build_patch_index,
    candidate_patches,
    index_hash,
    resolve_patches,
    split_counts,
    split_pixels,
    usable_blocks,
)
from sar2opt.data.patches import PatchError
from tests.helpers.cubes import NAN_SAR, OPT, PRIOR, RES, SAR, SPEC, X0, Y0, make_cube


def brute_valid(cube: xr.DataArray, t: int, r: int, c: int, p: int, aux: list[str]) -> bool:
    """The validity rules of extract_patches, spelt out on one window."""
    win = cube.isel(time=t, y=slice(r, r + p), x=slice(c, c + p))
    clear = win.sel(band="clear").values > 0.5
    opt_ok = np.isfinite(win.sel(band=OPT).values).all(0) | ~clear
    return bool(
        np.isfinite(win.sel(band=SAR).values).all()
        and np.isfinite(win.sel(band=aux).values).all()
        and opt_ok.all()
        and clear.mean() >= SPEC.min_clear_frac
    )


@pytest.mark.parametrize("input_set", ["S", "SOD"])
def test_index_is_exactly_the_valid_candidates(input_set: str) -> None:
    cube = make_cube()
    idx = build_patch_index(cube, SAR, OPT, SPEC, input_set=input_set)
    aux = [] if input_set == "S" else [*PRIOR, "dem"]
    labels = assign_blocks(192, 256, SPEC)
    rs, cs, _, _ = candidate_patches(192, 256, SPEC, labels)
    want = {
        (t, int(r), int(c))
        for t in range(3)
        for r, c in zip(rs, cs, strict=True)
        if brute_valid(cube, t, int(r), int(c), 16, aux)
    }
    got = set(zip(idx["time"], idx["row"], idx["col"], strict=True))
    assert got == want and len(got) == len(idx)
    # The SAR gap and the cloud removed real candidates; the DEM gap only for SOD.
    ts, rr, cc = idx["time"].to_numpy(), idx["row"].to_numpy(), idx["col"].to_numpy()

    def covering(t: int, y: int, x: int) -> int:
        return int(((ts == t) & (rr <= y) & (rr + 16 > y) & (cc <= x) & (cc + 16 > x)).sum())

    def candidates(y: int, x: int) -> int:
        return int(((rs <= y) & (rs + 16 > y) & (cs <= x) & (cs + 16 > x)).sum())

    n_gap = candidates(150, 20)
    assert n_gap > 0 and covering(*NAN_SAR) == 0
    assert covering(0, 150, 20) == n_gap  # the same place is fine on another date
    n_cloud = candidates(20, 25)
    assert n_cloud > 0 and covering(1, 20, 25) == 0 and covering(0, 20, 25) == n_cloud
    # NaN optical under a cloud pixel does not disqualify (1 cloudy pixel of 256: 0.996 clear)
    assert candidates(100, 40) > 0 and covering(0, 100, 40) == candidates(100, 40)
    n_dem = candidates(30, 230)
    assert n_dem > 0 and covering(0, 30, 230) == (n_dem if input_set == "S" else 0)
    assert list(idx.columns) == list(INDEX_COLUMNS)
    assert (idx["clear_frac"] >= SPEC.min_clear_frac).all() and (idx["clear_frac"] <= 1).all()


def _pair_separation(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """Chebyshev pixel gap between p-px squares at origins a (N, 2) and b (M, 2); < 0: overlap."""
    d = np.abs(a[:, None, :] - b[None, :, :]) - p  # pixels strictly between, per axis
    return d.max(axis=-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_splits_are_disjoint_with_a_gap(seed: int) -> None:
    spec = PatchSpec(
        patch_px=16, stride_px=8, min_clear_frac=0.98, val_frac=0.2, test_frac=0.1,
        split_seed=seed,
    )  # fmt: skip
    idx = build_patch_index(make_cube(), SAR, OPT, spec)
    counts = split_counts(idx)
    assert all(counts[s] > 0 for s in SPLITS), counts
    loc = idx[["row", "col", "split"]].drop_duplicates()
    # All dates of one place share a split.
    assert not loc.duplicated(["row", "col"]).any()
    origins = {s: loc.loc[loc["split"] == s, ["row", "col"]].to_numpy() for s in SPLITS}
    for i, s in enumerate(SPLITS):
        for o in SPLITS[i + 1 :]:
            sep = _pair_separation(origins[s], origins[o], 16)
            assert sep.min() >= 16, (s, o, sep.min())
    # Each patch lies wholly inside its block.
    nbx = -(-256 // 64)
    for rc, k in ((idx["row"], 0), (idx["col"], 1)):
        blk = idx["block"] // nbx if k == 0 else idx["block"] % nbx
        assert ((rc // 64) == blk).all() and (((rc + 15) // 64) == blk).all()


def test_the_gap_check_bites_without_a_gap() -> None:
    """With gap_px=0 patches of different splits touch: the pairwise check above can fail."""
    spec = PatchSpec(patch_px=16, stride_px=8, val_frac=0.2, test_frac=0.1, gap_px=0)
    idx = build_patch_index(make_cube(), SAR, OPT, spec)
    loc = idx[["row", "col", "split"]].drop_duplicates()
    tr = loc.loc[loc["split"] == "train", ["row", "col"]].to_numpy()
    other = loc.loc[loc["split"] != "train", ["row", "col"]].to_numpy()
    assert _pair_separation(tr, other, 16).min() == 0
    with_gap = build_patch_index(make_cube(), SAR, OPT, SPEC)
    assert len(with_gap) < len(idx)


def test_block_assignment_counts_edges_and_determinism() -> None:
    labels = assign_blocks(192, 256, SPEC)  # 3 x 4 blocks of 64 px
    assert labels.shape == (3, 4)
    n = {s: int((labels == i).sum()) for i, s in enumerate(SPLITS)}
    assert n == {"train": 9, "val": 2, "test": 1}  # round(0.2*12)=2, round(0.1*12)=1
    np.testing.assert_array_equal(labels, assign_blocks(192, 256, SPEC))
    other = assign_blocks(192, 256, PatchSpec(patch_px=16, val_frac=0.2, split_seed=7))
    assert not np.array_equal(labels, other)
    # A 70 px wide grid: the third block column is 6 px wide, holds no patch, stays unassigned.
    edge = assign_blocks(128, 134, PatchSpec(patch_px=16, block_px=32, val_frac=0.2))
    assert edge.shape == (4, 5) and (edge[:, 4] == UNASSIGNED).all()
    assert (edge[:, :4] != UNASSIGNED).all()
    # Tiny fractions still get one block each.
    tiny = assign_blocks(192, 256, PatchSpec(patch_px=16, val_frac=0.01, test_frac=0.01))
    assert (tiny == 1).sum() == 1 and (tiny == 2).sum() == 1


def test_index_is_deterministic_and_seed_dependent() -> None:
    cube = make_cube()
    a = build_patch_index(cube, SAR, OPT, SPEC)
    b = build_patch_index(cube, SAR, OPT, SPEC)
    assert a.equals(b) and index_hash(a) == index_hash(b)
    c = build_patch_index(cube, SAR, OPT, PatchSpec(**{**SPEC.__dict__, "split_seed": 5}))
    assert not a["split"].equals(c["split"]) and index_hash(a) != index_hash(c)


def test_too_few_blocks_and_empty_split_are_clear_errors() -> None:
    with pytest.raises(PatchError, match="too few for train"):
        build_patch_index(make_cube(h=64, w=64), SAR, OPT, SPEC)
    cube = make_cube()
    labels = assign_blocks(192, 256, SPEC)
    (bi,), (bj,) = np.nonzero(labels == SPLITS.index("test"))
    cube[:, 6, bi * 64 : bi * 64 + 64, bj * 64 : bj * 64 + 64] = 0.0  # the test block: cloudy
    with pytest.raises(PatchError, match="no test patches"):
        build_patch_index(cube, SAR, OPT, SPEC)
    with pytest.raises(PatchError, match="block_px"):
        build_patch_index(cube, SAR, OPT, PatchSpec(patch_px=16, block_px=8))


def test_bounds_from_coords_and_from_a_transform() -> None:
    cube = make_cube()
    idx = build_patch_index(cube, SAR, OPT, SPEC)
    np.testing.assert_allclose(idx["x_min"], X0 + RES * idx["col"])
    np.testing.assert_allclose(idx["x_max"], X0 + RES * (idx["col"] + 16))
    np.testing.assert_allclose(idx["y_max"], Y0 - RES * idx["row"])
    np.testing.assert_allclose(idx["y_min"], Y0 - RES * (idx["row"] + 16))
    tf = Affine(20.0, 0.0, 1000.0, 0.0, -20.0, 5000.0)
    idx2 = build_patch_index(cube, SAR, OPT, SPEC, transform=tf)
    np.testing.assert_allclose(idx2["x_min"], 1000 + 20 * idx2["col"])
    np.testing.assert_allclose(idx2["y_min"], 5000 - 20 * (idx2["row"] + 16))


def test_index_hash_is_stable_and_sensitive() -> None:
    idx = build_patch_index(make_cube(), SAR, OPT, SPEC)
    h = index_hash(idx)
    assert len(h) == 64 and int(h, 16) >= 0
    shuffled = idx.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert index_hash(shuffled) == h
    moved = idx.copy()
    moved.loc[5, "col"] += 8
    assert index_hash(moved) != h
    nudged = idx.copy()
    nudged.loc[7, "clear_frac"] -= 1e-9
    assert index_hash(nudged) != h
    assert index_hash(idx.drop(index=3)) != h


def test_split_pixels_are_the_split_blocks_and_hold_no_training_patch() -> None:
    cube = make_cube()  # 192 x 256 px, blocks of 64 px: 3 x 4
    labels = assign_blocks(192, 256, SPEC)
    test_px = split_pixels(192, 256, SPEC, "test")
    assert test_px.shape == (192, 256)
    for bi in range(3):
        for bj in range(4):
            block = test_px[bi * 64 : (bi + 1) * 64, bj * 64 : (bj + 1) * 64]
            assert block.all() == (labels[bi, bj] == SPLITS.index("test")) == block.any()
    assert test_px.sum() == 64 * 64 * (labels == SPLITS.index("test")).sum() > 0
    idx = build_patch_index(cube, SAR, OPT, SPEC)
    for r, c in idx.loc[idx["split"] == "train", ["row", "col"]].itertuples(index=False):
        assert not test_px[r : r + 16, c : c + 16].any()  # training never saw a test pixel
    with pytest.raises(ValueError, match="split must be one of"):
        split_pixels(192, 256, SPEC, "validation")


# ---------------------------------------------------------------- sizes derived from the grid


@pytest.mark.parametrize(
    ("side", "want"),
    [
        # (patch, block, gap, stride): the old defaults where the grid holds >= 10 blocks
        (2048, (128, 512, 128, 64)),
        (1024, (128, 192, 32, 16)),  # compact 128 px layout: 5 x 5 blocks
        (400, (64, 96, 16, 8)),  # compact 64 px layout: 4 x 4 blocks
        (264, (32, 48, 8, 4)),  # SSL4EO: 64 px layouts give only 2-9 blocks
        (256, (32, 48, 8, 4)),  # BioMassters, MultiEarth
        (120, (32, 48, 8, 4)),  # 2 x 2 blocks: the most a 120 px grid gives
    ],
)
def test_unset_sizes_are_derived_from_the_grid(side, want) -> None:
    r = resolve_patches(PatchSpec(), side, side)
    assert (r.patch_px, r.block_px, r.gap_px, r.stride_px) == want
    n = usable_blocks(side, side, r.patch_px, r.block_px)
    assert n >= 10 or side == 120
    assert resolve_patches(r, side, side) == r  # resolved stays resolved
    # set values are kept: only what is unset is derived
    assert resolve_patches(PatchSpec(patch_px=64), side, side).patch_px == 64
    assert resolve_patches(PatchSpec(patch_px=64), side, side).stride_px == 32


def test_a_120px_scene_splits_into_train_val_test_with_defaults() -> None:
    cube = make_cube(n_t=2, h=120, w=120)
    idx = build_patch_index(cube, SAR, OPT, PatchSpec(min_clear_frac=0.95))
    counts = split_counts(idx)
    assert all(counts[s] > 0 for s in SPLITS), counts
    assert idx.attrs["patch_px"] == 32 and idx.attrs["block_px"] == 48
    # the split evaluation derives from the grid is the one the index used
    for s in SPLITS:
        mask = split_pixels(120, 120, PatchSpec(), s)
        rows = idx[idx["split"] == s]
        for r, c in zip(rows["row"], rows["col"], strict=True):
            assert mask[r : r + 32, c : c + 32].all()
    # patches of different splits keep the derived 8 px gap
    a = idx[idx["split"] == "train"][["row", "col"]].to_numpy()
    b = idx[idx["split"] != "train"][["row", "col"]].to_numpy()
    assert _pair_separation(a, b, 32).min() >= 8


def test_set_sizes_that_do_not_fit_stop_with_one_line_saying_what_to_set() -> None:
    with pytest.raises(PatchError) as e:
        assign_blocks(120, 120, PatchSpec(patch_px=32, block_px=96))
    msg = str(e.value)
    assert "\n" not in msg and "1 usable 96 px block(s)" in msg
    assert "set patches.patch_px: 32, block_px: 48, gap_px: 8, stride_px: 4" in msg
    with pytest.raises(PatchError, match="too small to hold train, val and test blocks"):
        resolve_patches(PatchSpec(), 60, 60)
