"""One model on several cubes: a patch index per cube (own blocks, one patch size), a stream
that reads each patch from its cube, pooled statistics, clouds lent between cubes or drawn as
synthetic shapes, and a checkpoint that records each cube's held-out blocks for evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sar2opt.config import PatchSpec, load_config
from sar2opt.data.cloud_shapes import COVER_RANGE, synthetic_cloud_mask
from sar2opt.data.index import (
    balance_cubes,
    block_pixels,
    build_patch_index,
    resolve_patches,
    resolve_patches_common,
    split_blocks,
    split_pixels,
)
from sar2opt.data.patches import PatchError
from sar2opt.data.stream import (
    CloudMasks,
    cube_sources,
    lend_cloud_windows,
    norm_stats,
    read_patches,
    stream_order,
)
from sar2opt.evaluate.holdout import cube_identity, held_out_pixels, meta_for_cube
from tests.helpers.cubes import CLOUDY, OPT, SAR, SMALL_BLOCKS, write_sc_cube

AUX = {"cloudy": CLOUDY}
NORM = {
    "sar_mean": [-12.0, -19.0], "sar_std": [3.0, 3.0],
    "opt_mean": [0.05, 0.07, 0.06, 0.25], "opt_std": [0.02, 0.03, 0.03, 0.08],
}  # fmt: skip
P = 32
SPEC = PatchSpec(patch_px=P, stride_px=8, min_clear_frac=0.9, block_px=64, gap_px=8, val_frac=0.2,
                 test_frac=0.2)  # fmt: skip


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[list[str], pd.DataFrame]:
    """A cloudy cube (0) and a cloud-free one (1, another size), indexed together."""
    d = tmp_path_factory.mktemp("multi")
    paths = [str(d / "a" / "cube.zarr"), str(d / "b" / "cube.zarr")]
    write_sc_cube(Path(paths[0]), seed=0, clouds=True)
    write_sc_cube(Path(paths[1]), seed=1, size=256, clouds=False)
    parts = []
    for k, p in enumerate(paths):
        idx = build_patch_index(
            xr.open_zarr(p)["cube"], SAR, OPT, SPEC, input_set="SC", cloudy_bands=CLOUDY
        )
        idx.insert(0, "cube", k)
        parts.append(idx)
    index = pd.concat(parts, ignore_index=True)
    index.attrs["patch_px"] = P
    return paths, index


def test_synthetic_cloud_shapes_have_the_drawn_cover_and_are_clumps() -> None:
    a = synthetic_cloud_mask(7, 64, cover=0.3)
    assert a.dtype == bool and a.shape == (64, 64)
    assert a.mean() == pytest.approx(0.3, abs=1 / 4096)
    np.testing.assert_array_equal(a, synthetic_cloud_mask(7, 64, cover=0.3))  # seeded
    assert not np.array_equal(a, synthetic_cloud_mask(8, 64, cover=0.3))
    # clumps, not speckle: most cloud pixels have a cloud pixel on each side (noise: ~30 %)
    inner = a[1:-1, 1:-1] & a[:-2, 1:-1] & a[2:, 1:-1] & a[1:-1, :-2] & a[1:-1, 2:]
    assert inner.sum() > 0.6 * a[1:-1, 1:-1].sum()
    covers = [synthetic_cloud_mask(s, 32).mean() for s in range(200)]
    assert COVER_RANGE[0] - 0.01 <= min(covers) and max(covers) <= COVER_RANGE[1] + 0.01
    assert np.std(covers) > 0.1  # drawn over the range, not one value
    with pytest.raises(ValueError, match="cover"):
        synthetic_cloud_mask(0, 8, cover=1.5)


def test_one_patch_size_for_grids_that_derive_different_ones() -> None:
    small, large = resolve_patches(PatchSpec(), 120, 120), resolve_patches(PatchSpec(), 1400, 1400)
    assert small.patch_px < large.patch_px  # the grids alone disagree
    a, b = resolve_patches_common(PatchSpec(), [(120, 120), (1400, 1400)])
    assert a == small and b.patch_px == small.patch_px and b.block_px >= b.patch_px
    # the larger grid splits at the smaller size too, into more blocks
    assert (split_pixels(1400, 1400, b, "test")).any()
    # sizes set by the user apply to every grid
    fixed = resolve_patches_common(PatchSpec(patch_px=32), [(120, 120), (1400, 1400)])
    assert {s.patch_px for s in fixed} == {32}


def test_blocks_of_a_split_are_the_split_pixels() -> None:
    spec = resolve_patches(SPEC, 192, 160)
    blocks = split_blocks(192, 160, spec)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(
            block_pixels(192, 160, spec.block_px, blocks[s]), split_pixels(192, 160, spec, s)
        )


def test_the_stream_reads_each_patch_from_its_own_cube(two) -> None:
    paths, index = two
    kw = {"sar_bands": SAR, "opt_bands": OPT, "aux": AUX, "norm": NORM, "patch_px": P}
    rows = index.groupby(["cube", "split"]).head(3).sample(frac=1, random_state=0)
    both = read_patches(paths, rows, **kw)
    assert set(rows["cube"]) == {0, 1}
    for k, p in enumerate(paths):
        sel = (rows["cube"] == k).to_numpy()
        alone = read_patches(p, rows[sel].drop(columns="cube"), **kw)
        for key in ("sar", "opt", "mask", "cloudy"):
            np.testing.assert_array_equal(both[key][sel], alone[key])
    # the statistics pool every cube's train split
    pooled = norm_stats(paths, index, SAR, OPT, AUX, max_patches=10_000)
    one = [norm_stats(p, index[index.cube == k].drop(columns="cube"), SAR, OPT, AUX,
                      max_patches=10_000) for k, p in enumerate(paths)]  # fmt: skip
    n = [int(((index.cube == k) & (index.split == "train")).sum()) for k in (0, 1)]
    want = (n[0] * np.array(one[0]["sar_mean"]) + n[1] * np.array(one[1]["sar_mean"])) / sum(n)
    np.testing.assert_allclose(pooled["sar_mean"], want, rtol=1e-5)  # SAR: every pixel counts
    assert not np.allclose(pooled["sar_mean"], one[0]["sar_mean"])


def test_a_cloud_free_cube_borrows_the_other_cubes_real_clouds(two) -> None:
    paths, index = two
    sources = cube_sources(paths, SAR, OPT, AUX)
    assert [s.n_time for s in sources] == [4, 4]
    mask_pos = len(SAR) + len(OPT) + len(CLOUDY)
    borrow, lent, share = lend_cloud_windows(sources, index, mask_pos, P, seed=0)
    assert borrow == (1,) and share[1] == 0.0 and share[0] > 0.2
    assert lent and {w[0] for w in lent} == {0} and {w[1] % 2 for w in lent} == {1}
    cm = CloudMasks(seed=0, rate=1.0, borrow=borrow, lent=lent)
    rows = index[index.split == "train"].groupby("cube").head(12)
    kw = {"sar_bands": SAR, "opt_bands": OPT, "aux": AUX, "norm": NORM, "patch_px": P}
    plain = read_patches(paths, rows, **kw)
    laid = read_patches(paths, rows, **kw, cloud_masks=cm)
    b = (rows.cube == 1).to_numpy()
    assert plain["cloudy"][b, -1].max() == 0  # cube 1 has no cloud of its own
    cover = laid["cloudy"][b, -1].mean(axis=(1, 2))
    assert (cover >= 0.05).all()  # every patch of it got a real cloudy window of cube 0
    plan = cm.plan(rows.cube.to_numpy(), rows.time.to_numpy(), rows.row.to_numpy(),
                   rows.col.to_numpy(), [4, 4])  # fmt: skip
    assert (plan.lent[b] >= 0).all() and (plan.date[b] == -1).all()
    for i in np.flatnonzero(b):
        _, t, r, c = lent[plan.lent[i]]
        want = xr.open_zarr(paths[0])["cube"].sel(band="cloud_mask")[t, r : r + P, c : c + P]
        np.testing.assert_array_equal(laid["cloudy"][i, -1], want.values)
    # cube 0 draws its own other dates exactly as a single cube does
    a = ~b
    single = CloudMasks(seed=0, rate=1.0).donors(rows.time[a], rows.row[a], rows.col[a], 4)
    np.testing.assert_array_equal(plan.date[a], single)
    # no cube lends: synthetic shapes, seeded, of the drawn cover
    syn = CloudMasks(seed=0, rate=1.0, borrow=(1,), lent=())
    got = read_patches(paths, rows, **kw, cloud_masks=syn)
    again = read_patches(paths, rows, **kw, cloud_masks=syn)
    np.testing.assert_array_equal(got["cloudy"], again["cloudy"])
    cover = got["cloudy"][b, -1].mean(axis=(1, 2))
    assert ((cover >= COVER_RANGE[0] - 0.01) & (cover <= COVER_RANGE[1] + 0.01)).all()
    assert np.ptp(cover) > 0.05
    for key in ("sar", "opt", "mask"):  # the target and SAR are never touched
        np.testing.assert_array_equal(got[key], plain[key])


def test_held_out_pixels_follow_the_checkpoints_record_of_the_cube(two, tmp_path) -> None:
    from sar2opt.evaluate.holdout import cube_record

    paths, _ = two
    spec_a = resolve_patches(SPEC, 192, 192)
    rec = cube_record(paths[0], (4, 192, 192), spec_a, dict(xr.open_zarr(paths[0]).attrs))
    assert rec["id"] == cube_identity(paths[0]) != cube_identity(paths[1])
    meta = {"cubes": [rec], "cube_spec": {"max_dt_days": 99.0}}
    held = held_out_pixels(meta, paths[0], 192, 192)
    assert held.trained_here and held.split == "test"
    np.testing.assert_array_equal(held.pixels, split_pixels(192, 192, spec_a, "test"))
    assert meta_for_cube(meta, paths[0])["cube_spec"]["max_dt_days"] == 10.0  # its own rule
    other = held_out_pixels(meta, paths[1], 256, 256)
    assert not other.trained_here and other.pixels.all() and "not trained here" in other.note
    assert meta_for_cube(meta, paths[1]) is meta
    assert held_out_pixels({}, paths[0], 192, 192) is None  # an older checkpoint: its config
    # the identity is the content: a copy elsewhere is the same cube
    import shutil

    shutil.copytree(paths[0], tmp_path / "copy.zarr")
    assert held_out_pixels(meta, tmp_path / "copy.zarr", 192, 192).trained_here


def test_a_cube_that_cannot_split_names_itself(two, tmp_path) -> None:
    from sar2opt.train.trainer import TrainError, index_cubes, open_cubes

    paths, _ = two
    tiny = tmp_path / "tiny" / "cube.zarr"
    write_sc_cube(tiny, seed=2, size=64, clouds=False)
    cfg = load_config(
        None,
        ["patches.patch_px=32", "patches.block_px=64", "patches.gap_px=8", "patches.stride_px=8",
         "patches.min_clear_frac=0.9", "patches.test_frac=0.2", "model.input_set=SC"],
    )  # fmt: skip
    index, recs = index_cubes(open_cubes(paths), AUX, cfg)  # the two that split: fine
    assert sorted(set(index["cube"])) == [0, 1] and [r["name"] for r in recs] == ["a", "b"]
    with pytest.raises(PatchError, match=r"^tiny: .*too few"):
        index_cubes(open_cubes([paths[0], tiny]), AUX, cfg)
    with pytest.raises(TrainError, match="twice"):
        open_cubes([paths[0], paths[0]])


def test_resume_fills_model_fields_a_saved_run_predates() -> None:
    from sar2opt.config import ModelSpec, config_to_dict
    from sar2opt.train.trainer import TrainError, check_resumable

    now = config_to_dict(ModelSpec())
    old = {k: v for k, v in now.items() if k != "reference"}  # saved before model.reference
    check_resumable({"model": old, "index_hash": "h"}, now, "h", "r")
    with pytest.raises(TrainError, match="different model"):  # a real change is still refused
        check_resumable({"model": old}, {**now, "reference": "prior"}, "h", "r")


@pytest.mark.slow
def test_one_model_trains_on_two_cubes(ray_local, two, tmp_path: Path, capsys) -> None:
    """SC on a cloudy and a cloud-free cube: one index, the cloud-free cube borrows clouds,
    the checkpoint records both cubes' splits, and each cube's held-out blocks are its own."""
    from sar2opt.train.checkpoint import load_meta
    from sar2opt.train.trainer import train_model

    paths, _ = two
    cfg = load_config(
        None,
        [
            *SMALL_BLOCKS, "patches.stride_px=16", "patches.min_clear_frac=0.9",
            "model.ngf=8", "model.ndf=8", "model.depth=3", "model.input_set=SC",
            "model.discriminator=none", "model.reference=scene_fit", "train.epochs=2",
            "train.batch_size=8",
            "train.num_workers=1", "train.cube_balance=0",
        ],
    )  # fmt: skip
    ckpt = train_model(paths, tmp_path / "out", cfg)
    out = capsys.readouterr().out
    assert "b (0 % cloudy): " in out and "cloudy windows of the other cube(s)" in out
    meta = load_meta(ckpt)
    # the smaller cube's patches twice per epoch, through the Ray Data stream
    n_a, n_b = (r["patches_per_split"]["train"] for r in meta["cubes"])
    assert f"an epoch reads (train.cube_balance 0): a {2 * n_a} (2x), b {n_b} patches" in out
    assert "a (" in out and "its own other dates" in out
    # the reference gate judged the net on both cubes' val blocks, as inference runs it
    gate = meta["reference_gate"]
    assert gate["judged_on"] == "val blocks through the inference predictor"
    assert set(gate["per_cube"]) == {"a", "b"} and gate["pixels"] > 0
    each = [c["net"] / c["reference"] for c in gate["per_cube"].values()]  # each cube alike
    assert gate["ratio"] == pytest.approx(float(np.sqrt(each[0] * each[1])))
    assert gate["kept"] == ("net" if gate["ratio"] < 1 else "reference")
    assert "net vs its reference on the val blocks through the inference predictor" in out
    recs = meta["cubes"]
    assert [r["name"] for r in recs] == ["a", "b"]
    assert [r["id"] for r in recs] == [cube_identity(p) for p in paths]
    assert [r["shape"] for r in recs] == [[4, 192, 192], [4, 256, 256]]
    for r, p in zip(recs, paths, strict=True):
        assert r["blocks"]["test"] and r["patches_per_split"]["train"] > 0
        held = held_out_pixels(meta, p, *r["shape"][1:])
        spec = PatchSpec(**r["patches"])
        np.testing.assert_array_equal(held.pixels, split_pixels(*r["shape"][1:], spec, "test"))
    assert meta["cube_spec"] == recs[0]["cube_spec"]  # inference: the first cube's rule
    scores = json.loads((tmp_path / "out" / "test_scores.json").read_text())
    assert set(scores["per_cube"]) == {"a", "b"}
    assert scores["n_patches"] == sum(s["n_patches"] for s in scores["per_cube"].values())
    # a scene fit's uncertainty calibrated and checked on whole blocks, as inference meets them
    assert scores["uncertainty"]["on"] == "blocks through the inference predictor"
    assert "both as blocks through the inference predictor" in out
    per = scores["uncertainty"]["per_cube"]  # and each cube's deciles, the pooled ones' parts
    assert set(per) == {"a", "b"}
    pooled = sum(r["pixels"] for r in scores["uncertainty"]["deciles"])
    assert sum(r["pixels"] for rows in per.values() for r in rows) == pooled
    assert all(f"    {k}: ratio per decile " in out for k in per)


def test_balanced_cubes_repeat_the_small_cube_under_clouds_of_their_own(two) -> None:
    """``train.cube_balance``: a cube's share of an epoch goes as (its patches) ** power; the
    copies of a patch read apart and draw their own laid clouds, copy 0 as before."""
    paths, index = two
    train = index[index.split == "train"]
    n = train.cube.value_counts().sort_index().to_numpy()
    assert n[1] > 1.5 * n[0]  # the 256-px cube has more patches than the 192-px one
    assert balance_cubes(train, 1.0) is train
    assert balance_cubes(train.drop(columns="cube"), 0.0).equals(train.drop(columns="cube"))
    for power in (0.0, 0.5):
        got = balance_cubes(train, power)
        reps = got.groupby("cube")["repeat"].nunique().to_numpy()
        assert reps[1] == 1 and reps[0] == round((n[1] / n[0]) ** (1 - power))
        for rep in range(reps[0]):  # every copy is the whole small cube
            copy = got[(got.cube == 0) & (got.repeat == rep)].drop(columns="repeat")
            small = train[train.cube == 0]
            pd.testing.assert_frame_equal(copy.reset_index(drop=True), small.reset_index(drop=True))
    equal = balance_cubes(train, 0.0)
    share = equal.cube.value_counts(normalize=True).sort_index().to_numpy()
    assert abs(share[0] - 0.5) < abs(n[0] / n.sum() - 0.5) / 2  # far nearer an equal split
    with pytest.raises(PatchError, match=r"cube_balance must be in \[0, 1\]"):
        balance_cubes(train, 1.5)
    # copies of a patch are read in different read groups, so no batch holds two of them
    order = stream_order(equal, 8, shuffle_seed=0)
    key = equal[["cube", "time", "row", "col"]].astype(str).agg("/".join, axis=1).to_numpy()
    for g in range(0, len(order), 8):
        group = key[order[g : g + 8]]
        assert len(set(group)) == len(group)
    # laid clouds: copy 0 draws as the unbalanced rows, copy 1 draws its own
    kw = {"sar_bands": SAR, "opt_bands": OPT, "aux": AUX, "norm": NORM, "patch_px": P}
    cm = CloudMasks(seed=0, rate=1.0)
    rows = equal[equal.cube == 0].groupby("repeat").head(16)
    got = read_patches(paths, rows, **kw, cloud_masks=cm)
    first, second = (rows.repeat == 0).to_numpy(), (rows.repeat == 1).to_numpy()
    plain = read_patches(paths, rows[first].drop(columns="repeat"), **kw, cloud_masks=cm)
    for key_ in ("sar", "opt", "mask", "cloudy"):
        np.testing.assert_array_equal(got[key_][first], plain[key_])
        if key_ != "cloudy":  # the same patch under other clouds
            np.testing.assert_array_equal(got[key_][second], plain[key_])
    differs = (got["cloudy"][second, -1] != plain["cloudy"][:, -1]).any(axis=(1, 2))
    assert differs.mean() > 0.5, differs
