"""Streaming patches from a Zarr cube: exact values, trainer parity, statistics, Ray Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import sar2opt.data.stream as stream
from sar2opt.config import PatchSpec
from sar2opt.data.index import build_patch_index
from sar2opt.data.normalise import band_stats, normalise
from sar2opt.data.patches import PatchError
from sar2opt.data.stream import (
    cache_split,
    norm_stats,
    patch_dataset,
    read_patches,
    stream_order,
)
from sar2opt.train.loop import TrainFeed, epoch_rng
from tests.helpers.cubes import OPT, PRIOR, SAR, SPEC, make_cube
from tests.helpers.patch_reference import extract_patches

AUX = {"prior": PRIOR, "dem": ["dem"]}
NORM = {  # arbitrary but realistic statistics
    "sar_mean": [-14.5, -20.25], "sar_std": [2.5, 3.25],
    "opt_mean": [0.11, 0.12, 0.13, 0.2], "opt_std": [0.05, 0.06, 0.07, 0.1],
    "dem_mean": [101.0], "dem_std": [4.0],
}  # fmt: skip
RAW = {k: [float(k.endswith("_std"))] * len(v) for k, v in NORM.items()}  # identity
P = SPEC.patch_px


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.DataArray, pd.DataFrame]:
    """The index-test cube as a Zarr store in 24 px chunks (patches straddle chunks)."""
    cube = make_cube()
    path = tmp_path_factory.mktemp("stream") / "cube.zarr"
    ds = xr.Dataset({"cube": cube}, attrs={"sar_bands": SAR, "opt_bands": OPT})
    ds.to_zarr(path, mode="w", encoding={"cube": {"chunks": (1, cube.sizes["band"], 24, 24)}})
    idx = build_patch_index(cube, SAR, OPT, SPEC, input_set="SOD")
    return path, cube, idx


def hand(cube: xr.DataArray, rows: pd.DataFrame, norm: dict) -> dict[str, np.ndarray]:
    """Normalised patches sliced straight from the in-memory cube, float32 arithmetic."""
    names = [str(b) for b in cube["band"].values]
    arr = cube.values
    stat = {k: np.float32(v).reshape(-1, 1, 1) for k, v in norm.items()}
    out: dict[str, list] = {k: [] for k in ("sar", "opt", "mask", "prior", "dem")}
    for t, r, c in rows[["time", "row", "col"]].itertuples(index=False):
        w = arr[t, :, r : r + P, c : c + P]

        def get(bands: list[str], w: np.ndarray = w) -> np.ndarray:
            return w[[names.index(b) for b in bands]]

        m = get(["clear"]) > 0.5
        opt = (get(OPT) - stat["opt_mean"]) / stat["opt_std"]
        out["sar"].append((get(SAR) - stat["sar_mean"]) / stat["sar_std"])
        out["opt"].append(np.where(m, opt, 0))
        out["mask"].append(m.astype(np.float32))
        out["prior"].append((get(PRIOR) - stat["opt_mean"]) / stat["opt_std"])
        out["dem"].append((get(["dem"]) - stat["dem_mean"]) / stat["dem_std"])
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


@pytest.mark.parametrize("window_factor", [0.0, 1e9])  # patch-by-patch reads / one window
def test_read_patches_returns_the_cube_values(store, monkeypatch, window_factor: float) -> None:
    path, cube, idx = store
    monkeypatch.setattr(stream, "WINDOW_FACTOR", window_factor)
    rows = idx.sample(n=40, random_state=1)  # several dates, scattered, in random order
    got = read_patches(path, rows, sar_bands=SAR, opt_bands=OPT, aux=AUX, norm=NORM, patch_px=P)
    want = hand(cube, rows, NORM)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == np.float32 and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6, err_msg=k)
    assert np.isfinite(got["opt"]).all()


def test_read_patches_matches_todays_trainer_items(store) -> None:
    """Same (time, row, col) -> the arrays trainer.py built from extract_patches."""
    path, cube, idx = store
    p = extract_patches(cube, SAR, OPT, PatchSpec(patch_px=P, stride_px=8, min_clear_frac=0.98))
    key = pd.MultiIndex.from_arrays([p["time"], p["row"], p["col"]], names=["time", "row", "col"])
    common = idx.set_index(["time", "row", "col"]).index.intersection(key)
    assert len(common) > 100
    rows = common.to_frame(index=False)
    sel = key.get_indexer(common)
    mean, std = (np.asarray(NORM[k], np.float32) for k in ("sar_mean", "sar_std"))
    omean, ostd = (np.asarray(NORM[k], np.float32) for k in ("opt_mean", "opt_std"))
    items = {  # trainer.py's items, verbatim
        "sar": normalise(p["sar"][sel], mean, std).astype(np.float32),
        "opt": np.where(p["mask"][sel] > 0, normalise(p["opt"][sel], omean, ostd), 0.0).astype(
            np.float32
        ),
        "mask": p["mask"][sel],
    }
    got = read_patches(path, rows, sar_bands=SAR, opt_bands=OPT, aux={}, norm=NORM, patch_px=P)
    assert set(got) == set(items)
    for k in items:
        np.testing.assert_array_equal(got[k], items[k], err_msg=k)


def test_norm_stats_equal_numpy_over_train_patches(store) -> None:
    path, cube, idx = store
    train = idx[idx["split"] == "train"]
    raw = hand(cube, train, RAW)
    aux = {"prior": PRIOR, "dem": ["dem"]}
    got = norm_stats(path, idx, SAR, OPT, aux, max_patches=10_000)
    assert set(got) == {"sar_mean", "sar_std", "opt_mean", "opt_std", "dem_mean", "dem_std"}
    for k in ("sar", "dem"):
        m, s = band_stats(raw[k])
        np.testing.assert_allclose(got[f"{k}_mean"], m, rtol=1e-6)
        np.testing.assert_allclose(got[f"{k}_std"], s, rtol=1e-5)
    m, s = band_stats(raw["opt"], raw["mask"])
    np.testing.assert_allclose(got["opt_mean"], m, rtol=1e-6)
    np.testing.assert_allclose(got["opt_std"], s, rtol=1e-5)
    # Val/test patches are not used: statistics over all patches differ.
    every = hand(cube, idx, RAW)
    assert not np.allclose(band_stats(every["sar"])[0], got["sar_mean"], rtol=1e-7, atol=0)
    # A sample: deterministic for a seed, close to the full statistics; no DEM key without D.
    a = norm_stats(path, idx, SAR, OPT, {}, max_patches=60, seed=3)
    assert a == norm_stats(path, idx, SAR, OPT, {}, max_patches=60, seed=3)
    assert a != norm_stats(path, idx, SAR, OPT, {}, max_patches=60, seed=4)
    assert "dem_mean" not in a
    np.testing.assert_allclose(a["opt_mean"], got["opt_mean"], rtol=0.05)


def test_missing_band_and_empty_train_are_clear_errors(store) -> None:
    path, _, idx = store
    with pytest.raises(PatchError, match="lacks band"):
        read_patches(
            path, idx.head(3), sar_bands=SAR, opt_bands=OPT, aux={"dem": ["elev"]}, norm=NORM,
            patch_px=P,
        )  # fmt: skip
    with pytest.raises(PatchError, match="no train patches"):
        norm_stats(path, idx[idx["split"] == "val"], SAR, OPT, {})


def test_stream_order_keeps_read_groups_and_shuffles_them(store) -> None:
    _, _, idx = store
    plain = stream_order(idx, 16, None)
    assert sorted(plain) == list(range(len(idx)))
    # Without a seed: (time, block, row, col) order, so one read stays in one block mostly.
    keyed = idx.iloc[plain][["time", "block", "row", "col"]].to_numpy()
    assert (np.diff(keyed[:, 0]) >= 0).all()
    a, b = stream_order(idx, 16, 7), stream_order(idx, 16, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain) and not np.array_equal(a, stream_order(idx, 16, 8))
    # Each read group of the plain order comes out whole and contiguous, in another order.
    group_of = np.empty(len(idx), dtype=np.int64)
    group_of[plain] = np.arange(len(idx)) // 16
    runs = group_of[a]
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    assert len(starts) == -(-len(idx) // 16) and len(set(runs[starts])) == len(starts)
    assert not (runs[starts] == np.arange(len(starts))).all()


@pytest.mark.slow
def test_patch_dataset_rows_equal_read_patches(ray_local, store) -> None:
    path, _, idx = store
    rows = idx[idx["split"] == "val"]
    want = read_patches(path, rows, sar_bands=SAR, opt_bands=OPT, aux=AUX, norm=NORM, patch_px=P)
    ds = patch_dataset(
        path, rows, sar_bands=SAR, opt_bands=OPT, aux=AUX, norm=NORM, patch_px=P,
        rows_per_read=8, num_cpus=0.25, shuffle_seed=1,
    )  # fmt: skip
    got = ds.take_all()
    assert len(got) == len(rows) > 8
    by_sar = {want["sar"][i].tobytes(): i for i in range(len(rows))}
    seen = set()
    for row in got:
        assert set(row) == set(want)
        i = by_sar[np.asarray(row["sar"], np.float32).tobytes()]
        seen.add(i)
        for k in want:
            assert row[k].dtype == np.float32
            np.testing.assert_array_equal(row[k], want[k][i], err_msg=k)
    assert seen == set(range(len(rows)))


class _Shard:
    """A stand-in for a Ray Train dataset shard: records how each epoch was opened."""

    def __init__(self, n: int, fail: bool = False) -> None:
        self.n, self.fail, self.calls = n, fail, []

    def iter_torch_batches(self, **kw):
        self.calls.append(kw)
        if self.fail:
            raise RuntimeError("store gone")
        return iter([{"sar": torch.full((1,), float(i))} for i in range(self.n)])


def test_train_feed_opens_ahead_with_the_epochs_seed_and_reraises() -> None:
    shard = _Shard(3)
    feed = TrainFeed(shard, 4, torch.device("cpu"), seed=5, rank=1)
    feed.open(2)
    got = [float(b["sar"]) for b in feed.batches(2)]
    assert got == [0.0, 1.0, 2.0] and len(shard.calls) == 1  # opened once, ahead
    kw = shard.calls[0]
    assert kw["local_shuffle_seed"] == epoch_rng(5, 1, 2)[1] != epoch_rng(5, 1, 3)[1]
    assert kw["batch_size"] == 4 and kw["drop_last"] and kw["local_shuffle_buffer_size"] > 4
    assert feed.open_s >= 0
    # An epoch not opened ahead (or another one) is opened on demand.
    assert (
        len(list(feed.batches(3))) == 3
        and shard.calls[1]["local_shuffle_seed"] == (epoch_rng(5, 1, 3)[1])
    )
    # The augmentation generator continues after the shuffle seed's draw, as before.
    rng = np.random.default_rng([5, 1, 2])
    rng.integers(2**31)
    assert rng.integers(0, 4, 8).tolist() == epoch_rng(5, 1, 2)[0].integers(0, 4, 8).tolist()
    bad = TrainFeed(_Shard(1, fail=True), 4, torch.device("cpu"), seed=0, rank=0)
    bad.open(1)
    with pytest.raises(RuntimeError, match="store gone"):
        next(bad.batches(1))


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True])
def test_train_feed_shuffles_each_epoch_and_serves_each_patch_once(
    ray_local, store, cached: bool
) -> None:
    """Two workers' shards as Ray Train makes them (streaming_split, equal), streamed from the
    store or cached: per epoch every kept patch comes exactly once over both workers, and the
    next epoch in another order."""
    from concurrent.futures import ThreadPoolExecutor

    path, _, idx = store
    # every 4th train row (~220, all dates, across the cube): still several Ray blocks of 8-row
    # reads per worker, a quarter of the read tasks of the whole split
    rows = idx[idx["split"] == "train"].iloc[::4]
    want = read_patches(path, rows, sar_bands=SAR, opt_bands=OPT, aux={}, norm=NORM, patch_px=P)
    by_sar = {want["sar"][i].tobytes(): i for i in range(len(rows))}
    assert len(by_sar) == len(rows)
    ds = patch_dataset(
        path, rows, sar_bands=SAR, opt_bands=OPT, aux={}, norm=NORM, patch_px=P,
        rows_per_read=8, num_cpus=0.25, shuffle_seed=1,
    )  # fmt: skip
    if cached:
        ds = cache_split(ds, shuffle_seed=1)
        assert ds.count() == len(rows)  # count() executes: the cache holds every patch once
    bs, world = 4, 2
    feeds = [
        TrainFeed(s, bs, torch.device("cpu"), seed=0, rank=r)
        for r, s in enumerate(ds.streaming_split(world, equal=True))
    ]

    def consume(feed: TrainFeed, epoch: int) -> list[int]:
        return [by_sar[s.numpy().tobytes()] for b in feed.batches(epoch) for s in b["sar"]]

    seen = {}
    with ThreadPoolExecutor(world) as pool:
        for f in feeds:
            f.open(1)
        for epoch in (1, 2):
            seen[epoch] = list(pool.map(consume, feeds, [epoch] * world))
            if epoch == 1:  # opened while "validating", as the loop does
                for f in feeds:
                    f.open(2)
    per_worker = len(rows) // world // bs * bs  # equal split, then drop_last
    for epoch, lists in seen.items():
        assert [len(x) for x in lists] == [per_worker] * world, epoch
        flat = [i for x in lists for i in x]
        assert len(set(flat)) == len(flat), f"a patch came twice in epoch {epoch}"
    for r in range(world):
        assert seen[1][r] != seen[2][r]  # another order (and mix) in the next epoch


def test_prior_gaps_withhold_the_prior_of_a_seeded_share_of_patches(store) -> None:
    """Inference gives a pixel without a prior the band mean (0 standardised); training
    withholds the prior of ``prior_gap_rate`` of the patches the same way, by a seeded draw
    per (cube, time, row, col). Everything else is the plain read."""
    path, cube, idx = store
    rows = idx.head(64)
    kw = {"sar_bands": SAR, "opt_bands": OPT, "aux": AUX, "norm": NORM, "patch_px": P}
    plain = read_patches(path, rows, **kw)
    gaps = stream.CloudMasks(seed=3, rate=0.0, prior_gap_rate=0.4)
    got = read_patches(path, rows, cloud_masks=gaps, **kw)
    where = [rows[k].to_numpy() for k in ("time", "row", "col")]
    drawn = gaps.prior_gaps(np.zeros(len(rows), dtype=np.int64), *where)
    assert 0 < drawn.sum() < len(rows)  # some withheld, some kept
    assert (got["prior"][drawn] == 0).all()
    np.testing.assert_array_equal(got["prior"][~drawn], plain["prior"][~drawn])
    for k in ("sar", "opt", "mask", "dem"):
        np.testing.assert_array_equal(got[k], plain[k])
    again = stream.CloudMasks(seed=3, rate=0.0, prior_gap_rate=0.4)
    np.testing.assert_array_equal(again.prior_gaps(np.zeros(len(rows), np.int64), *where), drawn)
    # another cube's patches at the same places draw apart (about 0.48 of them differ)
    other = gaps.prior_gaps(np.ones(len(rows), dtype=np.int64), *where)
    assert 0.2 < (other != drawn).mean() < 0.8
    with pytest.raises(PatchError, match="prior gap rate"):
        stream.CloudMasks(prior_gap_rate=1.5)
