"""Seams of the block mosaic with the demo U-Net: the real pipeline vs a tile-free prediction.

A U-Net's receptive field (~hundreds of px at depth 5) is far wider than the 16-32 px of
context a block gets, so block borders cannot be exact (the small-receptive-field net of
test_infer_resume is). This measures how far off they are, with the demo architecture
(ngf 16, depth 5) initialised Kaiming-normal: its output leans on far context more than the
trained demo checkpoint does (measured on the demo cube: the trained net's seam errors are
3-4x smaller), so bounds that hold here hold for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from sar2opt.grid import GridSpec
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor, predict
from sar2opt.infer.run import FillJob, block_tasks, run_local, strip_tasks
from sar2opt.infer.store import create_store
from sar2opt.infer.tiles import round_up
from sar2opt.models.unet import UNetGenerator
from sar2opt.zones import blocks_by_row

NORM = {
    "sar_mean": [-12.0, -19.0],
    "sar_std": [3.0, 4.0],
    "opt_mean": [0.03, 0.05, 0.04, 0.3],
    "opt_std": [0.01, 0.02, 0.02, 0.05],
}
META = {"in_bands": ["vv", "vh"], "out_bands": ["B02", "B03", "B04", "B08"], "norm": NORM}
H = W = 480
GRID = GridSpec(32721, 10.0, (700_000.0, 9_400_000.0, 700_000.0 + 10 * W, 9_400_000.0 + 10 * H))
TIME = "2023-07-01T09:15:00Z"


def _sar() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    sar = np.stack([-12 + 3 * np.sin(xx / 9) * np.cos(yy / 13), -19 + 3 * np.cos(xx / 11)])
    return (sar + rng.normal(0, 1.0, sar.shape)).astype(np.float32)


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNetGenerator(2, 4, ngf=16, depth=5)
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return net.eval()


class _Sar:  # run.SarSource over _sar()
    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        r, c, h, w = window
        return _sar()[:, r : r + h, c : c + w]


def _mosaic(tmp_path, net: torch.nn.Module, overlap_px: int) -> np.ndarray:
    """The pipeline (strips -> predictor -> core written per block) into a store, read back."""
    lat = BlockLattice(GRID, 256, overlap_px)
    store = tmp_path / f"m{overlap_px}.zarr"
    create_store(store, GRID, [TIME], META["out_bands"], {}, lat.block_px)
    blocks = block_tasks([TIME], [0], lambda t: blocks_by_row(lat, None), set())
    predictor = TilePredictor.from_model(net, META, flips=1)
    job = FillJob(str(store), lat, _Sar(), batch_size=4)
    done = run_local(strip_tasks(blocks, 8), job, lambda: predictor)
    assert sum(len(b) for b in done) == lat.n_rows * lat.n_cols
    return xr.open_zarr(store)["optical"].values[0]


def _seams(block_px: int, width_px: int = 2) -> np.ndarray:
    seam = np.zeros((H, W), bool)
    for k in range(block_px, H, block_px):
        seam[k - width_px : k + width_px, :] = True
        seam[:, k - width_px : k + width_px] = True
    return seam


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[int, dict[str, float]]:
    net = _unet()
    assert H % net.stride == 0  # the tile-free reference needs no padding either
    full = predict(net, _sar()[None], NORM)[0]
    tmp = tmp_path_factory.mktemp("seams")
    out = {}
    for overlap in (32, 64):
        d = np.abs(_mosaic(tmp, net, overlap) - full)
        seam = _seams(256 - overlap)
        out[overlap] = {
            "seam_mean": float(d[:, seam].mean()),
            "seam_p99": float(np.percentile(d[:, seam], 99)),
            "off_mean": float(d[:, ~seam].mean()),
            "std": float(full.std(axis=(1, 2)).mean()),
        }
    return out


def test_unet_seam_error_is_bounded_relative_to_the_image(measured) -> None:
    # Bound: a seam is invisible when the jump it adds is small against the image's own
    # pixel-to-pixel variation. With halo = the net's stride (overlap 64 at stride 32) the
    # mean seam error must stay under 5% of the output's spatial std (2.1% measured) and
    # its 99th percentile under 25% (18% measured); the trained demo net measures ~0.6%.
    m = measured[64]
    assert m["seam_mean"] > 0  # the test sees the edge effect at all
    assert m["seam_mean"] < 0.05 * m["std"]
    assert m["seam_p99"] < 0.25 * m["std"]
    # at overlap 32 (halo 16 px, windows off the stride-32 lattice) the error spreads
    # everywhere: the net is not shift invariant by less than its stride
    assert measured[32]["off_mean"] > 3 * m["off_mean"]


def test_more_context_means_smaller_seams(measured) -> None:
    assert measured[64]["seam_mean"] < 0.5 * measured[32]["seam_mean"]
    assert measured[32]["seam_mean"] < 0.2 * measured[32]["std"]


def test_round_up() -> None:
    assert [round_up(n, 32) for n in (1, 32, 33, 256)] == [32, 32, 64, 256]
    assert round_up(20, 256) == 256
