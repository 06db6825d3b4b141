"""The composite's clear S2 is read once per strip (``run.strip_clear_s2``) and every block
cuts its core from that read (``run.offer_clear_s2``): the same bits as a read of each
block's own window (its core grown by ``dilate_px + feather_px``), one ``read_clear_s2`` per
strip instead of one per block; block by block again when a read of the strip was warped.

Scene (as ``test_aux_lazy_read``): 128 x 128 px, S2 07-03 ... 07-28 every 5 days; the
reference 07-08 takes that date's S2, 23 % clear: cloud-mask edges and their feather cross
the blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.infer import read, run
from sar2opt.infer.composite import SOURCE_NODATA, SOURCE_S2, evidence_rank, nearest_clear_pick
from sar2opt.infer.periods import BestEvidence, edge_weight, obs_seconds
from sar2opt.infer.plan import BlockLattice

SIZE_KM = 1.28
CAT = CatalogSpec(stac_url="http://127.0.0.1:1/stac")
SPEC = run.CompositeSpec(
    max_dt_days=2, opt_bands=tuple(CAT.opt_bands), rule=CubeSpec(cloud_dilate_px=3)
)
LAT = BlockLattice(scene_grid(SIZE_KM), 64, 32)  # 32-px blocks: 4 x 4
REF = obs_seconds("2023-07-08T09:15:00Z")
# a whole block row, one with a gap (an AOI hole), a single block
STRIPS = [
    run.Strip(0, "2023-07-08", 1, (0, 1, 2, 3)),
    run.Strip(0, "2023-07-08", 2, (0, 2, 3)),
    run.Strip(0, "2023-07-08", 3, (1,)),
]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> run.FillJob:
    items = generate_scene(
        tmp_path_factory.mktemp("syn-strip-s2") / "cat", size_km=SIZE_KM, n_s1=4, n_s2=6
    )
    s2 = tuple(it for it in items if it["collection"] == CAT.s2_collection)
    return run.FillJob(
        "unused.zarr", LAT, sar=None, out_bands=("B04", "B08"), s2_by_time=(s2,),
        composite=SPEC, reference_seconds=(REF,),
    )  # fmt: skip


def per_block(job: run.FillJob, strip: run.Strip, bj: int) -> tuple[BestEvidence, np.ndarray]:
    """What ``offer_clear_s2`` gave before: the block's own window read and composited."""
    r0, c0, r1, c1 = LAT.core(strip.bi, bj)
    best = BestEvidence(len(job.out_bands), (r1 - r0, c1 - c0))
    f = SPEC.feather_px
    pr0, pc0, ph, pw = LAT.halo(strip.bi, bj, SPEC.rule.cloud_dilate_px + f)
    obs, clear, when = run.read_clear_s2(
        job.s2_by_time[0], LAT.grid.subgrid(pr0, pc0, ph, pw), job.out_bands, SPEC
    )
    s2, pick = nearest_clear_pick(obs, clear, (when - REF) / 86400.0, SPEC.max_dt_days)
    inner = (slice(r0 - pr0, r1 - pr0), slice(c0 - pc0, c1 - pc0))
    keep = edge_weight(pick >= 0, f)[inner]
    s2, pick = s2[:, inner[0], inner[1]], pick[inner]
    source = np.where(pick >= 0, SOURCE_S2, SOURCE_NODATA).astype(np.uint8)
    obs_s = np.where(pick >= 0, when[np.maximum(pick, 0)], 0)
    best.offer(s2, source, np.float32(0.0), obs_s, evidence_rank(source), REF)
    return best, keep


def offered(
    job: run.FillJob, strip: run.Strip, bj: int, shared: run.ClearS2 | None
) -> tuple[BestEvidence, np.ndarray]:
    r0, c0, r1, c1 = LAT.core(strip.bi, bj)
    best = BestEvidence(len(job.out_bands), (r1 - r0, c1 - c0))
    return best, run.offer_clear_s2(job, strip, bj, best, shared)


def assert_same(got: tuple[BestEvidence, np.ndarray], want: tuple[BestEvidence, np.ndarray]):
    for name in ("optical", "source", "obs_time", "rank", "weight"):
        np.testing.assert_array_equal(getattr(got[0], name), getattr(want[0], name))
    np.testing.assert_array_equal(got[1], want[1])


def counting(monkeypatch, warp: bool = False) -> list[tuple[int, int]]:
    """The grid shapes ``read_clear_s2`` is called with from now on; with ``warp`` each call
    counts as a warped read (``read.warped_reads``)."""
    shapes: list[tuple[int, int]] = []
    real = run.read_clear_s2

    def wrapped(items, grid, *a, **k):
        shapes.append(grid.shape)
        if warp:
            read._local.warped = read.warped_reads() + 1
        return real(items, grid, *a, **k)

    monkeypatch.setattr(run, "read_clear_s2", wrapped)
    return shapes


def test_a_strip_reads_its_clear_s2_once_for_the_same_bits(job, monkeypatch) -> None:
    want = {(s, bj): per_block(job, s, bj) for s in STRIPS for bj in s.bjs}
    kept = [w[1] for w in want.values()]  # the scene has feathered cloud edges in the blocks
    assert any(((k > 0) & (k < 1)).any() for k in kept) and any((k == 0).any() for k in kept)
    shapes = counting(monkeypatch)
    for s in STRIPS:
        shared = run.strip_clear_s2(job, s)
        assert (shared is None) == (len(s.bjs) == 1)  # one block reads its own window
        for bj in s.bjs:
            assert_same(offered(job, s, bj, shared), want[s, bj])
    m = SPEC.rule.cloud_dilate_px + SPEC.feather_px
    # one read per strip: the union of its blocks' windows (the gap's block included)
    assert shapes == [(32 + 2 * m, 128), (32 + 2 * m, 128), (32 + m, 32 + 2 * m)]


def test_a_strip_with_a_warped_read_goes_block_by_block(job, monkeypatch) -> None:
    monkeypatch.setattr(run, "_WARPED_ITEMS", {})
    want = {(s, bj): per_block(job, s, bj) for s in STRIPS[:2] for bj in s.bjs}
    shapes = counting(monkeypatch, warp=True)
    for s in STRIPS[:2]:
        shared = run.strip_clear_s2(job, s)
        assert shared is None
        for bj in s.bjs:
            assert_same(offered(job, s, bj, shared), want[s, bj])
    m = SPEC.rule.cloud_dilate_px + SPEC.feather_px
    blocks = [LAT.halo(s.bi, bj, m)[2:] for s in STRIPS[:2] for bj in s.bjs]
    # the first strip read whole once, then block by block; those items are not tried
    # strip-wide again (the second strip: its 3 blocks only)
    assert shapes == [(32 + 2 * m, 128), *blocks]


def test_a_composite_takes_no_negative_feather_or_dilation() -> None:
    with pytest.raises(ValueError, match="feather_px"):
        run.CompositeSpec(max_dt_days=2, feather_px=-1)
    with pytest.raises(ValueError, match="dilate_px"):
        run.CompositeSpec(max_dt_days=2, rule=CubeSpec(cloud_dilate_px=-2))
