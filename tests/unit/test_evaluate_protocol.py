"""Block splits, scores and the seed protocol; the residual net starts as the ridge fit;
cloud-removal scoring under laid clouds, copy-prior, scored bands, the scene's inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sar2opt.evaluate.protocol import (
    BlockSplitSpec,
    CloudLaySpec,
    Scene,
    block_split,
    copy_prior_method,
    fixed_method,
    lay_clouds,
    load_scene,
    mean_colour_method,
    mean_std,
    predictor_method,
    prior_fit_methods,
    ridge_method,
    run_protocol,
    scores,
    select_bands,
)
from sar2opt.ops import dilate


def test_block_split_disjoint_fraction_buffer_and_seeds():
    spec = BlockSplitSpec(block_px=8, val_frac=0.25, buffer_px=2)
    train, held = block_split(32, 32, spec, seed=3)
    assert held.sum() == 4 * 64  # 4 of 16 blocks
    assert not (train & held).any()
    assert not (train & dilate(held, 2)).any()  # the buffer ring is out of training
    assert (train | dilate(held, 2)).all()
    again, _ = block_split(32, 32, spec, seed=3)
    assert (again == train).all()
    others = [block_split(32, 32, spec, seed=s)[1] for s in range(5)]
    assert len({o.tobytes() for o in others}) > 1


def test_block_split_restricted_to_allowed_strip():
    allowed = np.zeros((32, 40), bool)
    allowed[:, 20:] = True  # strip 20 px wide: blocks anchored at column 20
    _, held = block_split(32, 40, BlockSplitSpec(8, 0.5, 0), 0, allowed)
    assert not held[:, :20].any() and held.sum() == 4 * 64  # 8 candidate blocks, half held
    with pytest.raises(ValueError, match="no 64 px block"):
        block_split(32, 40, BlockSplitSpec(64, 0.5, 0), 0)


def test_mean_std_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert np.isnan(mean_std([float("nan")])[0])


def _scene(t=2, h=32, w=32, seed=0) -> Scene:
    rng = np.random.default_rng(seed)
    vv = rng.uniform(-14, -6, (t, h, w))
    vh = vv - 7 + rng.normal(0, 0.5, (t, h, w))
    truth = np.stack([0.15 + 0.01 * vv, 0.2 + 0.005 * vh], axis=1)
    return Scene(
        np.stack([vv, vh], axis=1).astype("float32"),
        truth.astype("float32"),
        np.ones((t, h, w), bool),
        ("B03", "B04"),
        tuple(f"2020-01-0{i + 1}" for i in range(t)),
    )


def test_scores_hand_example():
    sc = _scene(t=1, h=8, w=8)
    pred = sc.truth + 0.01
    mask = np.ones((1, 8, 8), bool)
    s = scores(pred, sc.truth, mask)
    assert s["mae"] == pytest.approx(0.01, rel=1e-4)
    assert s["psnr_db"] == pytest.approx(40.0, abs=1e-3)
    assert s["pixels"] == 64 and 0.0 < s["sam_deg"] < 5.0 and s["ssim"] < 1.0


def test_run_protocol_ranks_methods_on_held_blocks():
    sc = _scene()
    methods = {
        "perfect": fixed_method(sc.truth),
        "mean colour": mean_colour_method(per_date=True),
        "ridge": ridge_method(per_date=True, alpha=1e-6),
        "ridge pooled": ridge_method(per_date=False, alpha=1e-6),
    }
    res = run_protocol(sc, methods, BlockSplitSpec(8, 0.25, 2), seeds=[0, 1, 2])
    summ = res.summary()
    assert summ["perfect"]["mae"] == (0.0, 0.0)
    assert summ["ridge"]["mae"][0] < 1e-4 < summ["mean colour"]["mae"][0]
    assert summ["ridge pooled"]["mae"][0] < 1e-4
    assert len(res.per_seed["ridge"]) == 3 and len(res.held) == 3
    assert summ["ridge"]["pixels"][0] == 2 * 4 * 64  # 2 dates x 4 held blocks


def test_residual_net_starts_as_ridge_and_trains():
    from sar2opt.evaluate.residual import ResidualSpec, fit_residual

    sc = _scene(t=1)
    train, _ = block_split(32, 32, BlockSplitSpec(8, 0.25, 0), 0)
    ridge = ridge_method(per_date=True)(sc, train, 0)
    zero = fit_residual(sc, train, 0, ResidualSpec(ngf=4, depth=2, patch_px=16, steps=0))
    np.testing.assert_allclose(zero, ridge, atol=1e-6)
    some = fit_residual(sc, train, 0, ResidualSpec(ngf=4, depth=2, patch_px=16, steps=3))
    assert some.shape == ridge.shape and np.isfinite(some).all()
    assert not np.allclose(some, ridge)


def test_block_mae_on_held_lattice():
    from sar2opt.evaluate.report import block_mae

    sc = _scene(t=1, h=8, w=10)
    held = np.zeros((8, 10), bool)
    held[0:4, 2:6] = True  # one 4 px block anchored at column 2
    pred = sc.truth.copy()
    pred[:, :, 0:4, 2:6] += 0.02
    m = block_mae(pred, sc, held, 4)
    assert m.shape == (2, 3)  # rows [0,4), [4,8); cols [0,2), [2,6), [6,10)
    assert m[0, 1] == pytest.approx(0.02) and np.isnan(m).sum() == 5


def _cloud_scene(seed=0) -> Scene:
    """3 dates, 32 x 32: dates 0 and 2 clear, date 1 cloudy on rows 0-11 (its cloud_mask),
    with a same-date S2 and a prior that is missing on columns 0-7."""
    sc = _scene(t=3, seed=seed)
    mask = np.zeros((3, 32, 32), bool)
    mask[1, :12] = True
    cloudy = np.concatenate([np.where(mask[:, None], 0.5, sc.truth), mask[:, None]], axis=1)
    prior = sc.truth + 0.01
    prior[:, :, :, :8] = np.nan
    return replace(sc, clear=~mask, cloudy=cloudy.astype("float32"), prior=prior.astype("float32"))


def test_lay_clouds_masks_the_cloudy_input_of_clear_dates_deterministically():
    sc = _cloud_scene()
    seen, laid, pairs = lay_clouds(sc, 0, CloudLaySpec(buffer_px=2))
    assert pairs == {0: 1, 2: 1}  # date 1 is the only cloudy date; it gets no donor
    assert laid[0, :12].all() and not laid[0, 12:].any() and not laid[1].any()
    assert (seen.cloud_mask() == (laid | sc.cloud_mask())).all()
    assert (seen.cloudy[:, :-1] == sc.cloudy[:, :-1]).all()  # reflectance kept, mask set
    assert sc.cloud_mask()[0].sum() == 0  # the scene itself is untouched
    again = lay_clouds(sc, 0, CloudLaySpec(buffer_px=2))
    assert again[2] == pairs and (again[1] == laid).all()
    # two cloudy donors: the draw depends on the seed (and only on it)
    two = replace(sc, cloudy=sc.cloudy.copy(), clear=sc.clear.copy())
    two.cloudy[0, -1, 20:] = 1.0
    two.clear[0, 20:] = False
    draws = {s: lay_clouds(two, s)[2][2] for s in range(8)}
    assert set(draws.values()) == {0, 1}
    assert all(lay_clouds(two, s)[2][2] == d for s, d in draws.items())
    with pytest.raises(ValueError, match="no clear date"):
        lay_clouds(replace(sc, cloudy=None, clear=np.ones((3, 32, 32), bool)), 0)


def test_cloud_removal_scores_under_the_laid_mask_only():
    sc = _cloud_scene()

    def inside_wrong(scene, train, seed):  # perfect outside the input's clouds, +0.05 inside
        return scene.truth + 0.05 * scene.cloud_mask()[:, None]

    def outside_wrong(scene, train, seed):
        return scene.truth + 0.05 * ~scene.cloud_mask()[:, None]

    seen_train = {}

    def record(scene, train, seed):
        seen_train[seed] = np.array(train)
        return scene.truth

    spec = CloudLaySpec(buffer_px=2)
    res = run_protocol(
        sc,
        {"inside wrong": inside_wrong, "outside wrong": outside_wrong, "rec": record},
        BlockSplitSpec(8, 0.25, 2),
        seeds=[0, 1],
        clouds=spec,
    )
    summ = res.summary()
    assert summ["inside wrong"]["mae"][0] == pytest.approx(0.05, rel=1e-5)
    assert summ["outside wrong"]["mae"][0] == 0.0
    assert summ["rec"]["pixels"][0] == 2 * 12 * 32  # rows 0-11 of dates 0 and 2
    assert res.mode == "cloud removal" and res.laid == [{0: 1, 2: 1}, {0: 1, 2: 1}]
    tr = seen_train[0]
    assert tr.shape == (3, 32, 32)
    assert not tr[0, :14].any() and tr[0, 14:].all()  # laid clouds + their 2 px ring out
    assert tr[1].all()  # nothing laid on date 1
    # by default the fits see every pixel the model's cloudy input shows: no ring
    plain = run_protocol(
        sc, {"rec": record}, BlockSplitSpec(8, 0.25, 2), seeds=[0], clouds=CloudLaySpec()
    )
    tr = seen_train[0]
    assert not tr[0, :12].any() and tr[0, 12:].all()
    assert np.array_equal(tr, ~plain.held[0])


def test_cloud_removal_baselines_fit_outside_the_laid_mask():
    sc = _cloud_scene()
    truth = np.full_like(sc.truth, 0.1)
    truth[[0, 2], :, :12] = 0.3  # under the clouds laid on dates 0 and 2
    sc = replace(sc, truth=truth)
    res = run_protocol(
        sc,
        {"mean": mean_colour_method(per_date=True)},
        BlockSplitSpec(8, 0.25, 2),
        seeds=[0],
        clouds=CloudLaySpec(buffer_px=2),
    )
    # fitted on the clear pixels outside (0.1): off by 0.2 under the mask; fitted on all of
    # the date it would predict ~0.175
    assert res.summary()["mean"]["mae"][0] == pytest.approx(0.2, rel=1e-5)


def test_copy_prior_scored_where_the_prior_exists():
    sc = _cloud_scene()
    res = run_protocol(
        sc,
        {"prior": copy_prior_method(), "perfect": fixed_method(sc.truth)},
        BlockSplitSpec(8, 0.25, 0),
        seeds=[0],
    )
    summ = res.summary()
    assert summ["prior"]["mae"][0] == pytest.approx(0.01, rel=1e-4)
    held = res.held[0]
    assert summ["perfect"]["pixels"][0] == (sc.clear & held).sum()
    assert summ["prior"]["pixels"][0] == (sc.clear & held)[:, :, 8:].sum()
    with pytest.raises(ValueError, match="prior"):
        copy_prior_method()(replace(sc, prior=None), held, 0)


def test_scene_fit_baseline_fits_a_date_with_few_training_pixels():
    """The whole-date scene fit asks the per-date ridge's pixel count, not 10 % of the
    scene (a model window's rule): with 64 training pixels of 1024 (6 %) it still fits.
    Before, it fell back to copying the prior, or to 0 where there was none (MultiEarth's
    scene-fit row scored 1.95x ridge under laid clouds for that reason)."""
    sc = _cloud_scene()
    train = np.zeros((32, 32), bool)
    train[20:28, 12:20] = True  # 64 px, all with a prior
    fit = prior_fit_methods()[0](sc, train, 0)
    ridge = ridge_method()(sc, train, 0)
    held = ~train
    # the prior is the truth + 0.01: the fit learns the offset; copying it errs by 0.01
    assert np.abs(fit - sc.truth)[:, :, held[:, :] & ~np.isnan(sc.prior[0, 0])].max() < 1e-3
    # no prior on columns 0-7: the date's SAR-only fit, which is the per-date ridge (not 0)
    np.testing.assert_allclose(fit[..., :8], ridge[..., :8], atol=1e-5)
    assert np.abs(fit[..., :8]).min() > 0


def test_scored_bands_and_stated_uncertainty_from_a_predictor():
    sc = _cloud_scene()
    calls = []

    def predictor(batch):  # a stand-in for infer.predictor.TilePredictor
        calls.append(sorted(batch))
        pred = batch["prior"] + np.array([0.0, 0.02], "float32")[None, :, None, None]
        return {"pred": pred, "spread": np.full((1, 32, 32), 0.01, "float32")}

    res = run_protocol(
        sc,
        {"model": predictor_method(predictor, ("sar", "prior"))},
        BlockSplitSpec(8, 0.25, 0),
        seeds=[0, 1],
        bands=["B04"],
    )
    assert calls == [["prior", "sar"]] * 3  # one call per date, reused for the second seed
    assert res.bands == ("B04",) and res.first_preds["model"].shape == (3, 1, 32, 32)
    assert res.summary()["model"]["mae"][0] == pytest.approx(0.03, rel=1e-4)  # B04 only
    stated, err, groups = res.stated["model"]
    assert stated.size == groups.size == sum(r["pixels"] for r in res.per_seed["model"])
    assert groups.min() >= 0 and np.unique(groups).size > 2  # blocks x dates x seeds
    assert np.allclose(stated, 0.01) and np.allclose(err, 0.03, rtol=1e-4)
    sub = select_bands(sc, ["B04"])
    assert sub.truth.shape[1] == 1 and sub.cloudy.shape[1] == 2 and sub.prior.shape[1] == 1
    with pytest.raises(ValueError, match="B08"):
        select_bands(sc, ["B08"])


def test_load_scene_reads_the_inputs_the_cube_has(tmp_path):
    import xarray as xr

    sc = _cloud_scene()
    bands = ["vv", "vh", "B03", "B04", "clear", "prior_B03", "prior_B04"]
    bands += ["cloudy_B03", "cloudy_B04", "cloud_mask"]
    data = np.concatenate(
        [sc.sar_db, sc.truth, sc.clear[:, None].astype("float32"), sc.prior, sc.cloudy], axis=1
    )
    times = np.array(["2023-07-01", "2023-07-13", "2023-07-25"], "datetime64[ns]")
    coords = {"time": times, "band": np.array(bands, dtype=object)}  # Zarr v3: no fixed-width str
    ds = xr.DataArray(data, dims=("time", "band", "y", "x"), coords=coords).to_dataset(name="cube")
    ds.attrs.update({"sar_bands": ["vv", "vh"], "opt_bands": ["B03", "B04"]})
    ds.to_zarr(tmp_path / "c.zarr")
    got = load_scene(str(tmp_path / "c.zarr"))
    np.testing.assert_array_equal(got.prior, sc.prior)
    np.testing.assert_array_equal(got.cloudy, sc.cloudy)
    assert got.dem is None and set(got.inputs()) == {"sar", "prior", "cloudy"}
    only = load_scene(str(tmp_path / "c.zarr"), ["B04"])
    np.testing.assert_array_equal(only.prior[:, 0], sc.prior[:, 1])
    with pytest.raises(ValueError, match="dem"):
        load_scene(str(tmp_path / "c.zarr"), aux={"dem": ["dem"]})


def test_per_date_fits_skip_a_date_without_training_pixels():
    sc = _scene(t=2)
    clear = sc.clear.copy()
    clear[1] = False  # date 1 all cloud: nothing to fit on, nothing to score
    sc = replace(sc, clear=clear)
    train = np.ones((32, 32), bool)
    for method in (mean_colour_method(per_date=True), ridge_method(per_date=True)):
        pred = method(sc, train, 0)
        assert np.isfinite(pred[0]).all() and np.isnan(pred[1]).all()


def test_a_cloud_free_cube_gets_the_held_out_blocks_laid_as_clouds():
    """No date has clouds to donate (a clear season): the seed's held-out blocks are laid
    on every clear date instead, masked in the cloudy input, and only they are scored."""
    from sar2opt.evaluate.protocol import BLOCKS_DONOR

    sc = _cloud_scene()
    clear = replace(
        sc,
        clear=np.ones_like(sc.clear),
        cloudy=np.concatenate([sc.cloudy[:, :-1], np.zeros_like(sc.cloudy[:, -1:])], axis=1),
    )
    with pytest.raises(ValueError, match="no clear date"):
        lay_clouds(clear, 0, CloudLaySpec(buffer_px=2))
    blocks = np.zeros((32, 32), bool)
    blocks[8:16, 8:24] = True
    seen, laid, pairs = lay_clouds(clear, 0, CloudLaySpec(buffer_px=2), blocks=blocks)
    assert pairs == {t: BLOCKS_DONOR for t in range(clear.clear.shape[0])}
    assert (laid == blocks[None]).all()
    assert (seen.cloudy[:, -1] == blocks[None]).all()  # masked exactly there
    assert (seen.cloudy[:, :-1] == clear.cloudy[:, :-1]).all()  # reflectance kept


def test_a_cloud_free_cube_gets_real_cloud_shapes_lent_by_other_cubes(tmp_path):
    """Other cubes' cloud masks (``lent_masks``: cut to the grid, mirrored where a cube is
    smaller) are laid instead of the blocks when given: one per clear date, drawn from the
    seed and the date, only masks whose cover the donor rule allows."""
    import xarray as xr

    from sar2opt.evaluate.protocol import LENT_DONOR, donor_name, lent_masks

    sc = _cloud_scene()
    clear = replace(
        sc,
        clear=np.ones_like(sc.clear),
        cloudy=np.concatenate([sc.cloudy[:, :-1], np.zeros_like(sc.cloudy[:, -1:])], axis=1),
    )
    # a 20 x 24 lender with three dates: a 10 x 12 cloud, no S2 at all, a clear date
    m = np.zeros((3, 1, 20, 24), "float32")
    m[0, 0, :10, :12] = 1.0
    m[1] = np.nan
    path = tmp_path / "lender.zarr"
    xr.Dataset({"cube": (("time", "band", "y", "x"), m)}, coords={"band": ["cloud_mask"]}).to_zarr(
        path
    )
    lent = lent_masks([str(path)], (32, 32))
    assert lent.shape == (3, 32, 32) and lent[1].all() and not lent[2].any()
    want = np.zeros((32, 32), bool)
    want[:10, :12] = True
    want[30:, :12] = True  # rows 20-31 mirror rows 19-8: the cloud's rows 9, 8 again
    assert (lent[0] == want).all()
    blocks = np.zeros((32, 32), bool)
    blocks[8:16, 8:24] = True
    seen, laid, pairs = lay_clouds(clear, 0, CloudLaySpec(), blocks=blocks, lent=lent)
    # only the first mask has a donor's cover (2-80 %): no S2 and all clear are no cloud
    assert pairs == {t: LENT_DONOR for t in range(clear.clear.shape[0])}
    assert (laid == lent[0][None]).all() and (seen.cloudy[:, -1] == lent[0][None]).all()
    assert donor_name(LENT_DONOR - 2) == "lent mask 2"
    no_mask = tmp_path / "no_mask.zarr"
    xr.Dataset({"cube": (("time", "band", "y", "x"), m)}, coords={"band": ["B04"]}).to_zarr(no_mask)
    with pytest.raises(ValueError, match="no cloud_mask band"):
        lent_masks([str(no_mask)], (32, 32))


def test_region_scores_per_region_mae_and_ssim():
    from sar2opt.evaluate.protocol import region_scores

    sc = _scene(t=2, h=16, w=16)
    pred = sc.truth.copy()
    pred[..., :8] += 0.02  # left half off by 0.02, right half exact
    left = np.zeros((16, 16), bool)
    left[:, :8] = True
    mask = np.ones((2, 16, 16), bool)
    mask[1, :, :4] = False  # date 1 scores only 4 columns of the left half
    r = region_scores(pred, sc.truth, mask, {"left": left, "right": ~left})
    assert r["left"]["pixels"] == 16 * 8 + 16 * 4 and r["right"]["pixels"] == 2 * 16 * 8
    assert r["left"]["mae"] == pytest.approx(0.02, rel=1e-5)
    assert r["right"]["mae"] == pytest.approx(0.0, abs=1e-7)
    assert r["right"]["ssim"] > r["left"]["ssim"] and r["right"]["ssim"] <= 1.0
    empty = region_scores(pred, sc.truth, mask, {"none": np.zeros((16, 16), bool)})["none"]
    assert empty["pixels"] == 0 and np.isnan(empty["mae"])


def test_best_of_n_picks_the_best_candidate_per_image():
    from sar2opt.evaluate.protocol import best_of_n_scores

    truth = np.zeros((2, 1, 4, 4))
    hyps = np.stack([np.full((2, 1, 4, 4), 0.1), np.full((2, 1, 4, 4), 0.3)])
    hyps[1, 1] = 0.05  # date 1: the second candidate wins
    pred = hyps.mean(axis=0)
    s = best_of_n_scores(hyps, pred, truth, np.ones((2, 4, 4), bool))
    assert s["best_of_n"] == pytest.approx((0.1 + 0.05) / 2)
    assert s["mae_per_image"] == pytest.approx((0.2 + 0.075) / 2)
    assert s["n_candidates"] == 2


def test_run_protocol_scores_regions_candidates_and_a_downstream_hook():
    sc = _scene(t=2, h=32, w=32)
    left = np.zeros((32, 32), bool)
    left[:, :16] = True
    off = sc.truth + 0.01
    hyps = np.stack([sc.truth, sc.truth + 0.02])  # mean = off; the first candidate is exact
    seen = []

    def hook(scene, train, score_mask, preds, seed):
        seen.append((seed, sorted(preds), scene.truth.shape[1], int(score_mask.sum())))
        return {"accuracy": {"real S2": 1.0}, "pixels": {"real S2": 1}}

    from sar2opt.evaluate.protocol import Prediction

    methods = {
        "two": lambda scene, train, seed: Prediction(off, None, hyps),
        "ridge": ridge_method(per_date=True, alpha=1e-6),
    }
    res = run_protocol(
        sc, methods, BlockSplitSpec(8, 0.25, 2), seeds=[0, 1], bands=["B04"],
        regions={"left": left, "right": ~left}, downstream=hook,
    )  # fmt: skip
    summ = res.summary()
    assert summ["two"]["best_of_n"][0] == pytest.approx(0.0, abs=1e-7)
    assert summ["two"]["mae_per_image"][0] == pytest.approx(0.01, rel=1e-4)
    assert "best_of_n" not in summ["ridge"]
    reg = res.region_summary()
    assert reg["two"]["left"]["mae"][0] == pytest.approx(0.01, rel=1e-4)
    px = reg["two"]["left"]["pixels"][0] + reg["two"]["right"]["pixels"][0]
    assert px == pytest.approx(summ["two"]["pixels"][0])
    assert [s[:3] for s in seen] == [(0, ["ridge", "two"], 1), (1, ["ridge", "two"], 1)]
    assert len(res.downstream) == 2


def test_kept_hypotheses_are_the_flips_whose_mean_is_the_prediction():
    import torch

    from sar2opt.infer.predictor import TilePredictor
    from tests.unit.test_infer_predictor import META

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).eval()  # not flip-invariant
    pred = TilePredictor.from_model(conv, META, flips=3)
    sar = np.random.default_rng(0).uniform(-15, -5, (1, 2, 32, 32)).astype("float32")
    sar[0, :, 0, 0] = np.nan
    out = pred({"sar": sar}, keep_hypotheses=True)
    hyps = out["hypotheses"]
    assert "hypotheses" not in pred({"sar": sar})
    assert hyps.shape == (3, 1, 2, 32, 32)
    assert np.isnan(hyps[:, 0, :, 0, 0]).all()
    assert np.allclose(hyps.mean(axis=0), out["pred"], atol=1e-5, equal_nan=True)
    assert not np.allclose(hyps[0], hyps[1], equal_nan=True)  # the flips disagree
    sd = hyps.std(axis=0).mean(axis=1)
    assert np.allclose(sd, out["spread"], atol=1e-5, equal_nan=True)


def test_the_filled_scene_fit_baseline_spreads_the_fit_s_residual_from_the_training_pixels():
    """'Scene fit + clear pixels around': the per-date SAR + prior fit, then its residual on
    the pixels it was fitted on spread into the rest (``fill_residual``); on a date whose
    top rows are brighter than any SAR or prior says, it errs less under them."""
    import torch

    from sar2opt.models.reference import fill_residual

    sc = _cloud_scene()
    truth = sc.truth.copy()
    truth[:, :, 8:20] += 0.05  # a bright band across rows 8-19: no feature knows it
    sc = replace(sc, truth=truth)
    train = np.ones((32, 32), bool)
    train[10:18] = False  # the fits do not see rows 10-17
    plain_of, filled_of = prior_fit_methods()
    plain = plain_of(sc, train, 0)
    filled = filled_of(sc, train, 0)
    # the pair shares one fit per scene and training mask: another mask (the next seed's)
    # is fitted anew, as a fresh pair fits it
    other = np.ones((32, 32), bool)
    other[4:12] = False
    np.testing.assert_array_equal(filled_of(sc, other, 0), prior_fit_methods()[1](sc, other, 0))
    assert not np.allclose(filled_of(sc, other, 0)[0], filled[0])
    # a SAR gap (a swath's edge) is unscored, and the rest of its date fitted as before
    sar = sc.sar_db.copy()
    sar[0, :, 0, :3] = np.nan
    gap = replace(sc, sar_db=sar)
    p_gap, f_gap = (m(gap, train, 0) for m in prior_fit_methods())
    for got in (p_gap, f_gap):
        assert np.isnan(got[0][:, 0, :3]).all() and np.isfinite(got[0][:, 1:]).all()
    far = (slice(None), slice(8, None))  # beyond the gap's local means (5 px)
    np.testing.assert_allclose(p_gap[0][far], plain[0][far], atol=2e-3)
    tm = sc.clear & train[None] & np.isfinite(sc.truth).all(1)
    for t in (0, 2):  # the clear dates
        want = fill_residual(
            torch.from_numpy(plain[t].astype("float64"))[None],
            torch.from_numpy(np.nan_to_num(truth[t]).astype("float64"))[None],
            torch.from_numpy(tm[t])[None],
        )[0].numpy()
        np.testing.assert_allclose(filled[t], want, rtol=0, atol=1e-6)
        err = {k: np.abs(p[t][:, 10:18] - truth[t][:, 10:18]).mean() for k, p in
               (("plain", plain), ("filled", filled))}  # fmt: skip
        assert err["filled"] < 0.6 * err["plain"], err  # measured 0.015 vs 0.041
