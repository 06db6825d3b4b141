"""Tile planning and seamless blending (pure numpy, plus one deterministic conv net)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shapely.geometry import box

from sar2opt.grid import GridSpec
from sar2opt.infer.predictor import predict
from sar2opt.infer.tiles import (
    TileTask,
    accumulate,
    blend_weights,
    finalize,
    plan_tiles,
)


def _grid(h: int, w: int, epsg: int = 32633) -> GridSpec:
    return GridSpec(epsg, 10.0, (500_000.0, 4_000_000.0, 500_000.0 + 10 * w, 4_000_000.0 + 10 * h))


@pytest.mark.parametrize(
    "h, w, tile, overlap",
    [
        (200, 300, 64, 16),
        (1000, 700, 256, 32),
        (256, 256, 256, 32),
        (20, 45, 256, 32),
        (97, 300, 64, 0),
    ],
)
def test_plan_tiles_covers_grid_inside_with_stride(h: int, w: int, tile: int, overlap: int) -> None:
    tiles = plan_tiles(_grid(h, w), tile, overlap)
    cover = np.zeros((h, w), int)
    cores = np.zeros((h, w), int)
    for t in tiles:
        assert 0 <= t.row and t.row + t.height <= h and 0 <= t.col and t.col + t.width <= w
        assert t.height == min(tile, h) and t.width == min(tile, w)
        assert t.in_height % 32 == 0 and t.in_width % 32 == 0
        assert t.in_height - t.height < 32 and t.in_width - t.width < 32
        cover[t.row : t.row + t.height, t.col : t.col + t.width] += 1
        assert t.row <= t.core_row0 < t.core_row1 <= t.row + t.height
        assert t.col <= t.core_col0 < t.core_col1 <= t.col + t.width
        cores[t.core_row0 : t.core_row1, t.core_col0 : t.core_col1] += 1
    assert cover.min() >= 1  # every pixel predicted
    assert (cores == 1).all()  # cores partition the grid
    stride = tile - overlap
    rows = sorted({t.row for t in tiles})
    cols = sorted({t.col for t in tiles})
    for starts, size in ((rows, h), (cols, w)):
        steps = np.diff(starts)
        if len(starts) > 1:
            assert (steps[:-1] == stride).all()  # regular stride ...
            assert 0 < steps[-1] <= stride  # ... last one shifted inside (more overlap)
            assert starts[-1] + min(tile, size) == size


def test_plan_tiles_sizes_are_multiples_of_32_for_big_grids() -> None:
    tiles = plan_tiles(_grid(1000, 700), 256, 32)
    assert {(t.height, t.width) for t in tiles} == {(256, 256)}
    assert len(tiles) == 5 * 3  # starts 0,224,448,672,744 and 0,224,444


def test_plan_tiles_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        plan_tiles(_grid(100, 100), 100, 10)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(_grid(100, 100), 64, 64)


def test_plan_tiles_skips_tiles_outside_aoi() -> None:
    from pyproj import Transformer

    g = _grid(640, 640)  # 6.4 km, UTM 33N
    tr = Transformer.from_crs(f"EPSG:{g.epsg}", "EPSG:4326", always_xy=True)
    # AOI = a small box in the grid's north-west corner, given in lon/lat.
    x0, y1 = g.bounds[0] + 100, g.bounds[3] - 100
    lon0, lat0 = tr.transform(x0, y1 - 500)
    lon1, lat1 = tr.transform(x0 + 500, y1)
    aoi = box(lon0, lat0, lon1, lat1)
    all_tiles = plan_tiles(g, 128, 32)
    kept = plan_tiles(g, 128, 32, aoi)
    assert 0 < len(kept) < len(all_tiles)
    assert all(t.row < 100 and t.col < 100 for t in kept)
    assert (0, 0) in {(t.row, t.col) for t in kept}


def test_tile_task_round_trips_through_dict() -> None:
    t = plan_tiles(_grid(100, 100), 64, 16)[1].task(3, "2023-07-01T05:00:00Z")
    d = t.to_dict()
    assert d["t"] == 3 and d["time"].startswith("2023")
    assert TileTask.from_dict({k: np.int64(v) if k != "time" else v for k, v in d.items()}) == t


@pytest.mark.parametrize("tile, overlap", [(256, 32), (64, 16), (64, 0), (32, 31)])
def test_blend_weights_positive_symmetric_one_in_core(tile: int, overlap: int) -> None:
    w = blend_weights(tile, overlap)
    assert w.shape == (tile, tile)
    assert (w > 0).all() and w.max() <= 1.0
    assert w.max() == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(w, w[::-1, :])
    np.testing.assert_allclose(w, w[:, ::-1])
    np.testing.assert_allclose(w, w.T)
    k = min(overlap, tile // 2)
    assert (w[k : tile - k, k : tile - k] == 1.0).all()
    if 0 < overlap <= tile // 2:  # partition of unity across a seam of exactly `overlap`
        ramp = w[tile // 2, :]
        np.testing.assert_allclose(ramp[:overlap] + ramp[tile - overlap :], 1.0)


def test_blend_weights_rectangular() -> None:
    w = blend_weights((20, 45), 32)
    assert w.shape == (20, 45) and (w > 0).all()


def _smooth_field(h: int, w: int, c: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    return np.stack([np.sin(xx / 17 + k) * np.cos(yy / 23 - k) + 0.1 * k for k in range(c)])


@pytest.mark.parametrize("h, w, tile, overlap", [(200, 300, 64, 16), (50, 70, 64, 32)])
def test_blending_identical_predictions_reproduces_field(
    h: int, w: int, tile: int, overlap: int
) -> None:
    field = _smooth_field(h, w)
    acc, wsum = np.zeros_like(field), np.zeros_like(field)
    for t in plan_tiles(_grid(h, w), tile, overlap):
        pred = field[:, t.row : t.row + t.height, t.col : t.col + t.width]
        accumulate(acc, wsum, pred, blend_weights((t.height, t.width), overlap), t.row, t.col)
    out = finalize(acc, wsum, dtype="float64")
    np.testing.assert_allclose(out, field, rtol=0, atol=1e-12)


def test_accumulate_ignores_nan_and_finalize_leaves_uncovered_nan() -> None:
    acc, wsum = np.zeros((1, 4, 6)), np.zeros((1, 4, 6))
    w = blend_weights((4, 4), 1)
    a = np.full((1, 4, 4), 2.0)
    a[0, 0, 3] = np.nan
    b = np.full((1, 4, 4), 2.0)
    accumulate(acc, wsum, a, w, 0, 0)
    accumulate(acc, wsum, b, w, 0, 1)
    out = finalize(acc, wsum)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., :5], 2.0)  # NaN in one tile filled by the other
    assert np.isnan(out[..., 5]).all()  # never covered


class _ConvNet(torch.nn.Module):
    """Deterministic 3-layer 3x3 conv net: receptive field radius 3 px."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.convs = torch.nn.ModuleList(
            [torch.nn.Conv2d(a, b, 3, padding=1) for a, b in ((2, 8), (8, 8), (8, 3))]
        )
        with torch.no_grad():
            for c in self.convs:
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
                c.bias.copy_(torch.randn(c.bias.shape, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, c in enumerate(self.convs):
            x = c(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
        return x


NORM = {
    "sar_mean": [-12.0, -19.0],
    "sar_std": [3.0, 3.5],
    "opt_mean": [0.05, 0.07, 0.06],
    "opt_std": [0.02, 0.03, 0.04],
}

RF = 3  # receptive-field radius of _ConvNet
# Stated bound. A tile's own prediction is wrong by up to ~0.2 reflectance in its outer RF
# pixels (zero padding). The blend gives those pixels only the ramp's tail weight
# (sin^2(pi (i + 0.5) / 2 overlap) <= 0.06 for i < RF at overlap 16), so the seam error of the
# mosaic must be < 5% of the raw tile-edge error and < 0.01 reflectance (~0.005 measured),
# and zero (float noise) wherever no tile edge is within RF.
SEAM_REL_BOUND = 0.05
SEAM_ABS_BOUND = 0.01


def test_tiled_conv_net_matches_tile_free_prediction() -> None:
    h, w, tile, overlap = 200, 300, 64, 16
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w]
    sar = np.stack([-12 + 3 * np.sin(xx / 9) * np.cos(yy / 13), -19 + 3 * np.cos(xx / 11)])
    sar = (sar + rng.normal(0, 0.5, sar.shape)).astype(np.float32)
    model = _ConvNet().eval()
    full = predict(model, sar[None], NORM)[0]  # tile-free (reflect padded to 224x320)

    acc, wsum = np.zeros(full.shape), np.zeros(full.shape)
    tiles = plan_tiles(_grid(h, w), tile, overlap)
    raw_edge_err = 0.0
    for t in tiles:
        win = sar[None, :, t.row : t.row + t.height, t.col : t.col + t.width]
        pred = predict(model, win, NORM)[0]
        ref = full[:, t.row : t.row + t.height, t.col : t.col + t.width]
        raw_edge_err = max(raw_edge_err, float(np.abs(pred - ref).max()))
        accumulate(acc, wsum, pred, blend_weights((t.height, t.width), overlap), t.row, t.col)
    tiled = finalize(acc, wsum)

    # The grid's own border sees different padding in both runs; seams are what we test.
    inner = (slice(None), slice(RF, h - RF), slice(RF, w - RF))
    diff = np.abs(tiled - full)[inner]
    seam = np.zeros((h, w), bool)
    for t in tiles:
        for r in (t.row, t.row + t.height):
            seam[max(r - RF, 0) : r + RF, :] = True
        for c in (t.col, t.col + t.width):
            seam[:, max(c - RF, 0) : c + RF] = True
    seam_in = seam[inner[1:]]
    assert diff[:, seam_in].max() > 0  # the seams really are where edge effects live
    assert raw_edge_err > 0.05  # without blending the seams would be plainly visible
    assert diff[:, seam_in].max() < SEAM_REL_BOUND * raw_edge_err
    assert diff[:, seam_in].max() < SEAM_ABS_BOUND
    np.testing.assert_allclose(diff[:, ~seam_in], 0, atol=1e-5)  # exact away from edges
