"""store.write_blocks: a batch of blocks lands exactly where write_block would put each one."""

from __future__ import annotations

import numpy as np
import xarray as xr

import sar2opt.infer.store as store
from sar2opt.grid import GridSpec

T = ["2023-07-01T09:15:00Z", "2023-07-13T09:15:00Z"]
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * 70, 9_400_000.0 + 10 * 50))
CORES = [(0, 0, 32, 32), (0, 32, 32, 64), (0, 64, 32, 70), (32, 0, 50, 32), (32, 64, 50, 70)]


def _blocks(rng: np.random.Generator) -> list[tuple]:
    out = []
    for t in (0, 1):
        for core in CORES if t == 0 else CORES[:2]:
            h, w = core[2] - core[0], core[3] - core[1]
            out.append(
                (t, core, rng.random((2, h, w), np.float32), rng.integers(0, 3, (h, w)),
                 rng.random((h, w), np.float32))
            )  # fmt: skip
    return out


def test_write_blocks_merges_neighbours_and_writes_every_pixel(tmp_path, monkeypatch) -> None:
    blocks = _blocks(np.random.default_rng(0))
    one = store.create_store(tmp_path / "one.zarr", GRID, T, ["B04", "B08"], {}, 32)
    for b in blocks:
        store.write_block(one, *b)
    calls = []
    real = store.write_block
    monkeypatch.setattr(store, "write_block", lambda *a: calls.append(a[2]) or real(*a))
    batch = store.create_store(tmp_path / "batch.zarr", GRID, T, ["B04", "B08"], {}, 32)
    order = np.random.default_rng(1).permutation(len(blocks))
    store.write_blocks(batch, [blocks[i] for i in order])
    # t=0: row 0 is one window of 3 blocks; in row 1 the two blocks do not touch; t=1: one
    assert sorted(calls) == sorted(
        [(0, 0, 32, 70), (32, 0, 50, 32), (32, 64, 50, 70), (0, 0, 32, 64)]
    )
    a, b = xr.open_zarr(one), xr.open_zarr(batch)
    for var in ("optical", "source", "uncertainty"):
        np.testing.assert_array_equal(a[var].values, b[var].values)
    assert np.isnan(b["optical"][0, :, 32:, 32:64].values).all()  # the gap stays unwritten


def test_sharded_store_holds_blocks_written_into_one_shard_at_different_times(tmp_path) -> None:
    import json

    sharded = store.create_store(tmp_path / "s.zarr", GRID, T, ["B04", "B08"], {}, 32, 2)
    plain = store.create_store(tmp_path / "p.zarr", GRID, T, ["B04", "B08"], {}, 32)
    meta = json.loads((sharded / "optical" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 2, 32, 64]  # 2 blocks
    (codec,) = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"]
    assert codec["configuration"]["chunk_shape"] == [1, 2, 32, 32]  # chunks stay blocks
    assert store.shard_blocks(sharded) == 2 and store.shard_blocks(plain) == 1
    blocks = _blocks(np.random.default_rng(2))
    for path in (sharded, plain):
        # each block on its own: the second block of a shard is written after the first
        # (a resumed run, a block across an AOI gap), which must not lose the first
        for b in blocks:
            store.write_block(path, *b)
    a, b = xr.open_zarr(plain), xr.open_zarr(sharded)
    for var in ("optical", "source", "uncertainty"):
        np.testing.assert_array_equal(a[var].values, b[var].values)
    assert np.isfinite(b["optical"][0, :, :32].values).all()  # both blocks of a shard
    assert store.append_times(sharded, ["2023-07-25T09:15:00Z"]) == [2]
    assert xr.open_zarr(sharded)["optical"].shape == (3, 2, 50, 70)
    assert store.shard_blocks(sharded) == 2


def test_tasks_follow_the_store_shards_not_the_current_read_blocks(tmp_path) -> None:
    from sar2opt.infer.region import store_strips

    blocks = [{"t": 0, "time": T[0], "bi": 0, "bj": j} for j in range(3)]
    sharded = store.create_store(tmp_path / "s.zarr", GRID, T, ["B04"], {}, 32, 2)
    assert [s["bjs"] for s in store_strips(sharded, blocks, 3)] == [[0, 1], [2]]
    plain = store.create_store(tmp_path / "p.zarr", GRID, T, ["B04"], {}, 32)
    assert [s["bjs"] for s in store_strips(plain, blocks, 3)] == [[0, 1, 2]]
