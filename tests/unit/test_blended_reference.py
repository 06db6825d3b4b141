"""The scene fit blended between neighbouring blocks: one window is the scene fit itself, the
blend moves linearly between block centres, and a mosaic written with it does not step at
block edges where one fit per window does (``models.reference.blended_scene_fit``,
``predictor.TilePredictor.reference_fields``, ``run.fit_lattice``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.config import ModelSpec, config_to_dict
from sar2opt.data.inputs import REF_FIT_KEY, REF_KEY, input_channels
from sar2opt.evaluate.seams import edge_jumps
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import TilePredictor
from sar2opt.infer.run import FillJob, Strip, fit_lattice, process_strip
from sar2opt.models import build_generator
from sar2opt.models.reference import blended_scene_fit, scene_fit, tent_weights
from tests.helpers.infer_fakes import GRID, NORM, FakeSar, H, W, fake_sar

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _scene(h: int = 48, w: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sar = torch.randn(2, h, w, generator=g, dtype=torch.float64)
    refl = torch.randn(3, h, w, generator=g, dtype=torch.float64)
    clear = torch.rand(h, w, generator=g) < 0.7
    prior = torch.randn(3, h, w, generator=g, dtype=torch.float64)
    prior[:, :10, :10] = 0  # no prior there (the band mean, standardised)
    return sar, refl, clear, prior


def test_tent_weights_are_linear_between_centres_and_whole_beyond() -> None:
    w = tent_weights([8, 24, 40], 48)
    np.testing.assert_allclose(w.sum(0).numpy(), 1.0)
    assert w[0, :8].eq(1).all() and w[2, 40:].eq(1).all()  # beyond the outer centres
    # pixel 15 (centre 15.5) lies 7.5/16 of the way from centre 8 to centre 24
    np.testing.assert_allclose(w[:, 15].numpy(), [1 - 7.5 / 16, 7.5 / 16, 0.0])
    with pytest.raises(ValueError, match="ascending"):
        tent_weights([24, 8], 48)


def test_one_window_over_the_area_is_the_scene_fit() -> None:
    sar, refl, clear, prior = _scene()
    got = blended_scene_fit(sar, refl, clear, [[(0, 0, 48, 48)]], [24], [24], prior, prior)
    want = scene_fit(sar[None], refl[None], clear[None], prior[None], extra=prior[None])[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # without the prior: the SAR-only fit
    got = blended_scene_fit(sar, refl, clear, [[(0, 0, 48, 48)]], [24], [24])
    torch.testing.assert_close(got, scene_fit(sar[None], refl[None], clear[None])[0])


def _drifting_scene(h: int, w: int):
    """Reflectance linear in the SAR with a slope that drifts across the columns: each
    window's fit is another line, so fits that are not blended step where blocks meet."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sar = torch.stack(
        [torch.sin(xx / 12.0) * torch.cos(yy / 15.0), torch.cos(xx / 13.0 - yy / 17.0)]
    )
    sar = sar.to(torch.float64) + 0.01 * torch.randn(2, h, w, generator=g, dtype=torch.float64)
    slope = torch.linspace(-1.0, 1.0, w, dtype=torch.float64)
    refl = (slope * sar[0] + 0.5 * sar[1])[None]
    clear = torch.rand(h, w, generator=g) < 0.8
    return sar, refl, clear


def test_the_blend_does_not_step_at_block_edges_where_one_fit_per_block_does() -> None:
    """Blocks of 16 px, windows of 32 centred on them (a 3 x 4 lattice over 48 x 64 px):
    with each block's core taking its own window's fit, the reference jumps at block edges
    (several times the jump inside blocks); blended, the edges jump as inside, and the
    blend fits the scene no worse."""
    block, win, h, w = 16, 32, 48, 64
    sar, refl, clear = _drifting_scene(h, w)
    pad = (win - block) // 2
    r0s = [min(max(i * block - pad, 0), h - win) for i in range(h // block)]
    c0s = [min(max(j * block - pad, 0), w - win) for j in range(w // block)]
    windows = [[(r, c, win, win) for c in c0s] for r in r0s]
    cy = [i * block + block / 2 for i in range(h // block)]
    cx = [j * block + block / 2 for j in range(w // block)]
    blended = blended_scene_fit(sar, refl, clear, windows, cy, cx)
    own = torch.zeros_like(blended)
    for i, r in enumerate(r0s):
        for j, c in enumerate(c0s):
            ys, xs = slice(r, r + win), slice(c, c + win)
            fit = scene_fit(sar[None, :, ys, xs], refl[None, :, ys, xs], clear[None, ys, xs])[0]
            ys, xs = slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block)
            own[:, ys, xs] = fit[:, ys.start - r : ys.stop - r, xs.start - c : xs.stop - c]
    # the jumps of the reference minus those of the truth: what the fits add
    ok = np.ones((h, w), bool)

    def edge_over_inside(ref: torch.Tensor) -> float:
        edge, inside = edge_jumps((ref - refl).numpy(), ok, block)
        return float(edge.mean() / inside.mean())

    assert edge_over_inside(own) > 2.0  # the scene does make seams
    assert edge_over_inside(blended) < 1.2
    assert (blended - refl).abs().mean() <= 1.05 * (own - refl).abs().mean()


def test_a_window_without_enough_clear_pixels_blends_in_its_fallback() -> None:
    sar, refl, clear, prior = _scene(32, 64)
    clear[:, 32:] = False  # the east window sees no clear pixel
    windows = [[(0, 0, 32, 32), (0, 32, 32, 32)]]
    got = blended_scene_fit(sar, refl, clear, windows, [16], [16, 48], prior)
    west = scene_fit(sar[None, ..., :32], refl[None, ..., :32], clear[None, :, :32])[0]
    # west of the west centre: its own fit (features of the area: west of column 29, the
    # 5-px local means do not reach the east window)
    torch.testing.assert_close(got[:, :, :16], west[:, :, :16])
    torch.testing.assert_close(got[:, :, 48:], prior[:, :, 48:])  # east of the east centre
    f = 13.5 / 32  # pixel 29 lies 13.5 px east of the west centre, the centres 32 apart
    torch.testing.assert_close(got[:, :, 29], (1 - f) * west[:, :, 29] + f * prior[:, :, 29])


def _sc_model(seed: int = 0) -> tuple[torch.nn.Module, dict]:
    spec = ModelSpec(generator="unet", input_set="SC", reference="scene_fit", ngf=8, depth=3)
    in_ch, dem_ch = input_channels("SC", 2, 1)
    torch.manual_seed(seed)
    model = build_generator(spec, in_ch, 1, dem_ch).eval()
    meta = {
        "in_bands": ["vv", "vh"], "out_bands": ["B04"], "norm": NORM, "input_set": "SC",
        "model": config_to_dict(spec),
    }  # fmt: skip
    return model, meta


def _truth(t: int) -> np.ndarray:
    """B04 reflectance on GRID: linear in the fake SAR with a slope drifting west to east."""
    sar = fake_sar(t)
    slope = np.linspace(0.0, 0.01, W, dtype=np.float32)[None]
    return (0.05 + slope * (sar[0] + 12) + 0.002 * (sar[1] + 19))[None].astype(np.float32)


def _clouds() -> np.ndarray:
    """(H, W) bool: 30 % of the grid in fixed random blobs tens of pixels wide, wider than
    the residual fill's reach (``models.reference.fill_residual``), so that their cores show
    the blended fit itself."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(7).standard_normal((H, W)), 12)
    return field > np.quantile(field, 0.7)


class _Cloudy:
    """``run.AuxSource`` of the same-date S2 of ``_truth``: clouds over ``_clouds``."""

    keys = ("cloudy",)

    def read(self, t: int, window: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
        r, c, h, w = window
        cloud = _clouds()
        refl = np.where(cloud, np.nan, _truth(t)[0])
        out = np.stack([refl, cloud.astype(np.float32)])[:, r : r + h, c : c + w]
        return {"cloudy": out.astype(np.float32)}


def _mosaic(blend: bool, flips: int = 1) -> np.ndarray:
    model, meta = _sc_model()
    lat = BlockLattice(GRID, 64, 32)
    out = np.full((1, H, W), np.nan, np.float32)

    def write(job, strip, blocks):
        for _, (r0, c0, r1, c1), optical, *_ in blocks:
            out[:, r0:r1, c0:c1] = optical

    job = FillJob("unused.zarr", lat, FakeSar(), batch_size=4, aux=_Cloudy(), write=write,
                  blend_reference=blend)  # fmt: skip
    predictor = TilePredictor.from_model(model, meta, flips=flips)
    for bi in range(lat.n_rows):
        for j0 in range(0, lat.n_cols, 4):
            bjs = tuple(range(j0, min(j0 + 4, lat.n_cols)))
            process_strip(Strip(0, "2023-07-03T05:43:12Z", bi, bjs), job, predictor)
    return out


def test_a_scene_fit_mosaic_does_not_step_at_block_edges() -> None:
    """The real fill (``process_strip``, strips of 4 blocks, an untrained SC scene-fit model:
    its output is its reference) on a scene whose SAR -> optical map drifts: one fit per
    window steps at the 32-px block edges; blended between neighbouring blocks (across
    strips too: the rows above and below are read for their fits) it does not, and it errs
    no more. TTA flips flip the given reference with the input: the same mosaic."""
    truth = _truth(0)
    ok = np.ones((H, W), bool)
    ratio = {}
    for blend in (False, True):
        m = _mosaic(blend)
        edge, inside = edge_jumps(m - truth, ok, 32)
        ratio[blend] = edge.mean() / inside.mean()
        err = np.nanmean(np.abs(m - truth))
        assert np.isfinite(m).all()
        if not blend:
            err_own = err
    assert ratio[False] > 3.0, ratio  # measured 10.4
    assert ratio[True] < 1.3, ratio  # measured 0.94
    assert err <= 1.05 * err_own
    np.testing.assert_allclose(_mosaic(True, flips=4), m, rtol=0, atol=1e-6)


def test_the_predictor_takes_a_given_reference_as_its_own() -> None:
    """With the field of a single window (its own fit), the prediction is the one the model
    makes without it; a non-scene-fit model has no field to give."""
    model, meta = _sc_model()
    for p in model.parameters():  # a net that adds to its reference
        p.data.add_(0.01 * torch.randn_like(p))
    sar = fake_sar(0)[None, :, :64, :64]
    batch = {"sar": sar, "cloudy": _Cloudy().read(0, (0, 0, 64, 64))["cloudy"][None]}
    pred = TilePredictor.from_model(model, meta)
    field = pred.reference_fields(batch, [[(0, 0, 64, 64)]], [32], [32])
    assert {k: v.shape for k, v in field.items()} == {
        k: (1, 1, 64, 64) for k in (REF_KEY, REF_FIT_KEY)
    }
    got = pred(batch | {k: v[None] for k, v in field.items()})
    np.testing.assert_allclose(got["pred"], pred(batch)["pred"], rtol=1e-5, atol=1e-6)
    # the uncertainty checks the fit under the reference, given or not
    np.testing.assert_allclose(got["raw_uncertainty"], pred(batch)["raw_uncertainty"], rtol=1e-5)
    got = pred(batch | {REF_KEY: field[REF_KEY][None]})["pred"]
    np.testing.assert_allclose(got, pred(batch)["pred"], rtol=1e-5, atol=1e-6)
    plain = TilePredictor.from_model(torch.nn.Conv2d(3, 1, 1), meta | {"model": {}})
    assert plain.reference_fields(batch, [[(0, 0, 64, 64)]], [32], [32]) is None


def test_fit_lattice_holds_the_strip_and_its_neighbours() -> None:
    lat = BlockLattice(GRID, 64, 32)  # blocks of 32, windows of 64: 7 x 10 blocks
    f = fit_lattice(lat, 0, (3, 4))  # top row: no row above
    assert len(f.windows) == 2 and len(f.windows[0]) == 4  # rows 0-1, cols 2-5
    assert f.area == (0, 2 * 32 - 16, 32 - 16 + 64, 5 * 32 - 16 + 64 - (2 * 32 - 16))
    assert f.centres_y == (16.0, 48.0)
    assert f.centres_x == tuple(16.0 + 32 * k + 16 for k in range(4))
    last = fit_lattice(lat, 6, (8, 9))  # bottom-right corner: windows shifted inward
    assert last.area[0] + last.area[2] == H and last.area[1] + last.area[3] == W
    # a residual fill reaching 32 px, beyond the next block centre (16 px past the core)
    wide = fit_lattice(lat, 3, (4,), reach_px=32)
    assert len(wide.windows) == 5 and len(wide.windows[0]) == 5  # two blocks a side
    assert fit_lattice(lat, 3, (4,), reach_px=16) == fit_lattice(lat, 3, (4,))


def test_evaluate_scores_the_reference_inference_writes() -> None:
    """``evaluate.py`` feeds a scene-fit checkpoint the reference blended over the scene's
    inference lattice (``run.grid_fit_lattice``): an untrained SC model (its output is its
    reference) predicts the mosaic the real fill writes, where one fit over the whole scene
    does not."""
    from sar2opt.evaluate.protocol import Scene, predictor_method
    from sar2opt.infer.run import grid_fit_lattice

    model, meta = _sc_model()
    predictor = TilePredictor.from_model(model, meta)
    scene = Scene(
        sar_db=fake_sar(0)[None], truth=_truth(0)[None], clear=np.ones((1, H, W)),
        bands=("B04",), times=("2023-07-03",),
        cloudy=_Cloudy().read(0, (0, 0, H, W))["cloudy"][None],
    )  # fmt: skip
    fits = grid_fit_lattice(BlockLattice(GRID, 64, 32))
    blended = predictor_method(predictor, ("sar", "cloudy"), fits=fits)(scene, None, 0).pred
    whole = predictor_method(predictor, ("sar", "cloudy"))(scene, None, 0).pred
    mosaic = _mosaic(True)
    np.testing.assert_allclose(blended[0], mosaic, rtol=0, atol=1e-6)  # measured: equal
    assert np.abs(whole[0] - mosaic).mean() > 3e-4  # measured 0.0008 (B04 ~0.05)
