"""Cloud removal (SC/SCO/SCOD): the same-date S2 with its cloud mask, from the cube's rule to
the model's input, the synthetic clouds training lays on it, one training step on a cube of
the tiled build, and what ``source`` says about the pixels such a model made.

The identity of the inference input and the training patch for SC/SCO/SCOD is in
``test_infer_inputs`` (parametrised over every input set).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from shapely.geometry import box

from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, Config, CubeSpec, ModelSpec, PatchSpec
from sar2opt.cube import build, tiled_build
from sar2opt.cube.align import composite_nearest_clear, same_date_optical
from sar2opt.data.index import build_patch_index
from sar2opt.data.inputs import input_channels, model_input, normalise_input
from sar2opt.data.stream import CloudMasks, lay_cloud_masks, norm_stats, read_patches
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer.composite import (
    EVIDENCE_RANK,
    SOURCE_CLOUD_REMOVED,
    SOURCE_MEANINGS,
    SOURCE_NODATA,
    SOURCE_S2,
    SOURCE_SYNTH,
    SOURCE_SYNTH_PRIOR,
    evidence_rank,
)
from sar2opt.infer.periods import BestEvidence
from sar2opt.infer.read import CatalogAux
from sar2opt.profiles import profile_for
from sar2opt.train.trainer import aux_bands
from tests.helpers.data import search_in

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CAT = CatalogSpec(stac_url="http://127.0.0.1:1/stac")
SPEC = CubeSpec(epsg=32721, max_dt_days=4, cloud_dilate_px=3, chunk_px=32, tile_px=64, cloudy=True)
NORM = {
    "sar_mean": [-9.0, -15.5],
    "sar_std": [2.5, 3.0],
    "opt_mean": [0.04, 0.06, 0.05, 0.28],
    "opt_std": [0.015, 0.02, 0.025, 0.06],
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 128 x 128 px synthetic scene (S1 07-01 ... 08-06, S2 07-03 ... 07-28) and its cube
    from the tiled build, with the cloud-removal bands."""
    root = tmp_path_factory.mktemp("syn-cloudy")
    items = generate_scene(root / "catalog", size_km=1.28, n_s1=4, n_s2=6)
    aoi = box(*lonlat_bounds(scene_grid(1.28))).buffer(-1e-4)
    s1 = [it for it in items if it["collection"] == CAT.s1_collection]
    cube = root / "cube.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "search_s1", lambda *a, **k: s1)
        mp.setattr(build, "search_aoi", search_in(items))
        tiled_build.build_tiled(
            aoi, "2023-07-01", "2023-08-10", catalog=CAT, spec=SPEC, out=cube, log=lambda *_: None
        )
    return {"items": items, "cube": cube}


def test_same_date_optical_is_the_nearest_observation_clouds_included() -> None:
    """Per pixel the nearest observed S2 (not the nearest clear one), masked where it is
    cloudy or missing; where clear it is the target composite's pixel."""
    opt = np.stack([np.full((2, 2, 3), v, np.float32) for v in (0.1, 0.2, 0.3)])
    opt[0, :, 0, 2] = np.nan  # the nearest image does not reach one pixel
    clear = np.array(
        [
            [[True, False, True], [True, True, True]],  # nearest: a cloud at (0, 1)
            [[True, True, False], [True, True, True]],  # second: cloudy at (0, 2)
            [[True, True, True], [True, True, True]],
        ]
    )
    clear[0, 0, 2] = False  # the cloud test flags missing data (clean.cloud_shadow_mask)
    order = [0, 1, 2]
    refl, mask = same_date_optical(opt, clear, order)
    # (0, 1): the nearest image's cloud, masked; (0, 2): the second image (cloudy), masked
    np.testing.assert_array_equal(refl[0], np.float32([[0.1, 0.1, 0.2], [0.1, 0.1, 0.1]]))
    np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 0]])
    target, found, _ = composite_nearest_clear(opt, clear, order)
    np.testing.assert_array_equal(refl[:, mask == 0], target[:, mask == 0])
    assert target[0, 0, 1] == np.float32(0.2) and found.all()  # the fill's target
    # no observation at all: NaN, masked
    refl, mask = same_date_optical(opt, clear, [])
    assert np.isnan(refl).all() and (mask == 1).all()


def test_cloudy_pixels_carry_the_mask_not_values() -> None:
    """Standardised, a masked pixel's reflectance is 0 (the band mean) and its mask 1; a
    missing observation is masked too; clear pixels are the standardised reflectance."""
    x = np.full((1, 5, 2, 3), 0.5, np.float32)  # four bands of 0.5 (a bright cloud), a mask
    x[0, :4, 0, 0] = [0.04, 0.06, 0.05, 0.28]  # a clear pixel: the band means
    x[0, :4, 0, 1] = [0.055, 0.08, 0.075, 0.34]
    x[0, 4] = [[0, 0, 1], [1, 1, 0]]
    x[0, :4, 1, 2] = np.nan  # no S2 observation, yet the mask says clear: masked anyway
    z = normalise_input("cloudy", x, NORM)
    assert z.shape == x.shape and z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_array_equal(z[0, 4], [[0, 0, 1], [1, 1, 1]])
    assert (z[0, :4][:, z[0, 4] == 1] == 0).all()  # no cloud reflectance reaches the model
    np.testing.assert_array_equal(z[0, :4, 0, 0], 0)
    np.testing.assert_allclose(z[0, :4, 0, 1], [1, 1, 1, 1], rtol=1e-5)
    assert input_channels("SC", 2, 4) == (7, 0)
    assert input_channels("SCO", 2, 4) == (11, 0)
    assert input_channels("SCOD", 2, 4) == (12, 1)  # the DEM stays last
    batch = {
        "sar": np.zeros((1, 2, 2, 3), np.float32),
        "cloudy": z,
        "prior": np.full((1, 4, 2, 3), 7, np.float32),
        "dem": np.full((1, 1, 2, 3), 9, np.float32),
    }
    assert model_input(batch, "SCOD")[0, :, 1, 2].tolist() == [0, 0, 0, 0, 0, 0, 1, 7, 7, 7, 7, 9]


def test_cloudy_mask_edges_across_windows(scene) -> None:
    """A partly cloudy date (07-08): the reader's windows (grown by the cloud dilation) give
    the values of the whole grid, where dilated clouds cross window edges."""
    grid = GridSpec.from_dict(xr.open_zarr(scene["cube"]).attrs["grid"])
    s2 = tuple(it for it in scene["items"] if it["collection"] == CAT.s2_collection)
    rule = CubeSpec(max_dt_days=1, cloud_dilate_px=3)
    when = "2023-07-08T14:00:00Z"
    profile = profile_for(CAT.stac_url, CAT.s2_collection)
    whole = build.read_cloudy(s2, grid, when, opt_bands=CAT.opt_bands, spec=rule, profile=profile)
    assert 0.2 < whole[-1].mean() < 0.8  # clouds and clear ground
    aux = CatalogAux(
        grid, ("cloudy",), times=(when,), opt_bands=tuple(CAT.opt_bands), rule=rule,
        s2_profile=profile, cloudy_items_by_time=(tuple(build.cloudy_items(s2, when, rule)),),
    )  # fmt: skip
    differs = 0
    gh, gw = grid.shape
    for r in range(0, gh, 40):
        for c in range(0, gw, 48):
            h, w = min(40, gh - r), min(48, gw - c)
            got = aux.read(0, (r, c, h, w))["cloudy"]
            want = whole[:, r : r + h, c : c + w]
            np.testing.assert_array_equal(got, want)
            # without the halo the dilation would stop at the window edge: other values
            no_halo = build.read_cloudy(
                s2, grid.subgrid(r, c, h, w), when, opt_bands=CAT.opt_bands, spec=rule,
                profile=profile,
            )  # fmt: skip
            differs += int(not np.array_equal(no_halo, want, equal_nan=True))
    assert differs >= 2  # clouds crossed window edges: the halo was needed, and read


def test_cloud_masks_lay_another_dates_clouds_on_the_input(scene) -> None:
    """``CloudMasks``: seeded per patch (any batching), another date, only the cloudy
    input's mask grows (and its reflectance is zeroed there); the target is untouched."""
    cm = CloudMasks(seed=3, rate=0.5)
    t, r, c = np.repeat([0, 1, 2, 3], 25), np.tile(np.arange(25) * 4, 4), np.zeros(100, int)
    donors = cm.donors(t, r, c, 4)
    assert ((donors == -1) | ((donors != t) & (donors >= 0) & (donors < 4))).all()
    assert 30 < (donors >= 0).sum() < 70
    np.testing.assert_array_equal(cm.donors(t[::-1], r[::-1], c[::-1], 4), donors[::-1])
    assert (CloudMasks(seed=3, rate=0).donors(t, r, c, 4) == -1).all()
    assert (CloudMasks(seed=3, rate=1).donors(t, r, c, 1) == -1).all()  # no other date
    with pytest.raises(Exception, match="rate"):
        CloudMasks(rate=1.5)
    own = np.zeros((2, 5, 2, 2), np.float32)
    own[:, 4] = [[[1, 0], [0, 0]], [[0, 0], [0, 0]]]
    laid = lay_cloud_masks(own, np.array([[[[0, 1], [np.nan, 0]]]], np.float32), np.array([-1, 2]))
    np.testing.assert_array_equal(laid[:, 4], [[[1, 0], [0, 0]], [[0, 1], [1, 0]]])

    ds = xr.open_zarr(scene["cube"])
    opt = list(ds.attrs["opt_bands"])
    aux = aux_bands(dict(ds.attrs), opt, "SC")
    assert aux == {"cloudy": [*(f"cloudy_{b}" for b in opt), "cloud_mask"]}
    rows = pd.DataFrame({"time": [0, 1, 0, 1], "row": [0, 0, 64, 64], "col": [0, 32, 64, 96]})
    kw = {"sar_bands": ds.attrs["sar_bands"], "opt_bands": opt, "aux": aux, "norm": NORM,
          "patch_px": 32}  # fmt: skip
    plain = read_patches(scene["cube"], rows, **kw)
    aug = read_patches(scene["cube"], rows, **kw, cloud_masks=CloudMasks(seed=0, rate=1.0))
    for k in ("sar", "opt", "mask"):
        np.testing.assert_array_equal(aug[k], plain[k])
    m0, m1 = plain["cloudy"][:, 4], aug["cloudy"][:, 4]
    assert (m1 >= m0).all() and (m1 > m0).any()  # 07-01 / 07-13 are clear: clouds were laid
    assert (aug["cloudy"][:, :4][np.broadcast_to(m1[:, None] == 1, (4, 4, 32, 32))] == 0).all()
    keep = np.broadcast_to(m1[:, None] == 0, (4, 4, 32, 32))
    np.testing.assert_array_equal(aug["cloudy"][:, :4][keep], plain["cloudy"][:, :4][keep])
    # the donor's mask is the cube's cloud_mask of that window at the donor date
    donors = CloudMasks(seed=0, rate=1.0).donors(rows.time, rows.row, rows.col, ds.sizes["time"])
    cube = ds["cube"]
    for i, (d, rr, cc) in enumerate(zip(donors, rows.row, rows.col, strict=True)):
        theirs = cube.isel(time=int(d), y=slice(rr, rr + 32), x=slice(cc, cc + 32))
        theirs = theirs.sel(band="cloud_mask").values
        np.testing.assert_array_equal(m1[i], np.maximum(m0[i], theirs))


def test_an_sc_model_trains_a_step_on_the_tiled_cube(scene) -> None:
    """Index, statistics and patches of the tiled build's cube for SC, with the synthetic
    clouds the trainer lays on them; one GAN step moves the generator; the loss counts the
    pixels the clouds hide (their target is clear)."""
    from sar2opt.models import build_discriminator, build_generator
    from sar2opt.train.step import gan_step

    ds = xr.open_zarr(scene["cube"])
    sar, opt = list(ds.attrs["sar_bands"]), list(ds.attrs["opt_bands"])
    aux = aux_bands(dict(ds.attrs), opt, "SC")
    spec = PatchSpec(patch_px=32, stride_px=16, min_clear_frac=0.9, block_px=64, val_frac=0.25,
                     test_frac=0.25)  # fmt: skip
    index = build_patch_index(
        ds["cube"], sar, opt, spec, input_set="SC", cloudy_bands=aux["cloudy"]
    )
    train = index[index["split"] == "train"]
    assert len(train) >= 4
    norm = norm_stats(scene["cube"], index, sar, opt, aux, patch_px=32)
    assert set(norm) == {"sar_mean", "sar_std", "opt_mean", "opt_std"}  # cloudy: optical stats
    batch = read_patches(
        scene["cube"], train.iloc[:8], sar_bands=sar, opt_bands=opt, aux=aux, norm=norm,
        patch_px=32, cloud_masks=CloudMasks(seed=0, rate=1.0),
    )  # fmt: skip
    hidden = (batch["cloudy"][:, 4:5] == 1) & (batch["mask"] == 1)
    assert hidden.mean() > 0.1  # the loss sees pixels to fill
    model = ModelSpec(ngf=8, ndf=8, depth=3, input_set="SC")
    in_ch, dem_ch = input_channels("SC", len(sar), len(opt))
    torch.manual_seed(0)
    gen = build_generator(model, in_ch, len(opt), dem_ch)
    disc = build_discriminator(model, in_ch + len(opt))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in gen.parameters()]
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    out = gan_step(gen, disc, opt_g, opt_d, tb, input_set="SC")
    assert all(np.isfinite(v) for v in out.values()) and out["g_l1"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters(), strict=True))
    # a cube without the cloud-removal bands says how to make them
    with pytest.raises(Exception, match=r"cube.cloudy: true"):
        build_patch_index(
            ds["cube"].sel(band=[b for b in ds.band.values if "cloud" not in str(b)]),
            sar, opt, spec, input_set="SC",
        )  # fmt: skip


def test_source_codes_of_a_cloud_removal_model() -> None:
    """A strip through ``process_strip`` with an SCO model: where that date's S2 was seen
    (cloudy or clear) -> cloud removed (4); not seen, with a prior -> 3, without -> 2; no
    SAR -> 0. The ranks: real clear S2, then cloud removed, then prior, then SAR alone."""
    from sar2opt.infer.plan import BlockLattice
    from sar2opt.infer.predictor import TilePredictor
    from sar2opt.infer.run import FillJob, Strip, process_strip, strip_window
    from tests.helpers.infer_fakes import GRID, HoleySar, tiny_net

    class Aux:
        keys = ("cloudy", "prior")

        def read(self, t, window):
            r, c, h, w = window
            cloudy = np.full((2, h, w), 0.05, np.float32)
            cloudy[1] = 0.0
            cloudy[1, : h // 2] = 1.0  # clouds over the north half: seen, masked
            cloudy[0, :, : w // 3] = np.nan  # no S2 that date over the west third
            cloudy[1, :, : w // 3] = 1.0
            prior = np.full((1, h, w), 0.05, np.float32)
            prior[:, h // 2 :] = np.nan  # no prior over the south half
            return {"cloudy": cloudy, "prior": prior}

    net = tiny_net()
    net[0] = torch.nn.Conv2d(5, 4, 3, padding=1)  # sar (2) + cloudy (B04 + mask) + prior (B04)
    meta = {
        "in_bands": ["vv", "vh"], "out_bands": ["B04"], "model": {}, "input_set": "SCO",
        "norm": {"sar_mean": [-12.0, -19.0], "sar_std": [3.0, 4.0], "opt_mean": [0.05],
                 "opt_std": [0.02]},
    }  # fmt: skip
    lat = BlockLattice(GRID, 128, 32)
    out = []
    job = FillJob(
        "unused.zarr", lat, HoleySar(), batch_size=4, aux=Aux(),
        write=lambda job, strip, blocks: out.extend(blocks),
    )  # fmt: skip
    strip = Strip(0, "2023-07-03T05:43:12Z", 0, (0, 1))
    process_strip(strip, job, TilePredictor.from_model(net, meta))
    r, c, h, w = strip_window(lat, 0, strip.bjs)
    for _, (r0, c0, r1, c1), optical, source, *_ in out:
        rows, cols = np.arange(r0, r1)[:, None] - r, np.arange(c0, c1)[None] - c
        seen = np.broadcast_to(cols >= w // 3, (r1 - r0, c1 - c0))
        prior = np.broadcast_to(rows < h // 2, (r1 - r0, c1 - c0))
        expected = np.where(seen, SOURCE_CLOUD_REMOVED, np.where(prior, SOURCE_SYNTH_PRIOR,
                                                                 SOURCE_SYNTH))  # fmt: skip
        hole = (rows < 4) & (cols < 4)
        expected = np.where(hole, SOURCE_NODATA, expected)
        np.testing.assert_array_equal(source, expected.astype(np.uint8))
        assert np.isnan(optical[:, hole]).all() and np.isfinite(optical[:, ~hole]).all()
    assert {int(v) for o in out for v in np.unique(o[3])} == {
        SOURCE_CLOUD_REMOVED, SOURCE_SYNTH_PRIOR, SOURCE_SYNTH, SOURCE_NODATA
    }  # fmt: skip
    # codes are stable (appended); ranks order the evidence
    assert SOURCE_CLOUD_REMOVED == 4 and SOURCE_MEANINGS[4] == "cloud removed"
    assert list(SOURCE_MEANINGS)[:4] == [0, 1, 2, 3]
    codes = [SOURCE_S2, SOURCE_CLOUD_REMOVED, SOURCE_SYNTH_PRIOR, SOURCE_SYNTH]
    assert sorted(codes, key=EVIDENCE_RANK.get) == codes
    best = BestEvidence(1, (1, 3))
    for code in (SOURCE_SYNTH, SOURCE_SYNTH_PRIOR, SOURCE_CLOUD_REMOVED):
        src = np.full((1, 3), code, np.uint8)
        best.offer(np.full((1, 1, 3), code, np.float32), src, 0.0, 0, evidence_rank(src), 0)
    assert (best.source == SOURCE_CLOUD_REMOVED).all()
    s2 = np.array([[SOURCE_S2, SOURCE_NODATA, SOURCE_SYNTH]], np.uint8)
    best.offer(np.zeros((1, 1, 3), np.float32), s2, 0.0, 0, evidence_rank(s2), 0)
    assert best.source.tolist() == [[SOURCE_S2, SOURCE_CLOUD_REMOVED, SOURCE_CLOUD_REMOVED]]


def test_cloud_removal_inputs_that_cannot_be_supplied_stop_before_any_work(tmp_path) -> None:
    from sar2opt.errors import ConfigError
    from sar2opt.infer import region as region_mod
    from sar2opt.infer.predictor import Models, load_models
    from sar2opt.train.checkpoint import CheckpointError, load_meta, save_untrained_checkpoint

    def models(input_set):
        return Models(("/ck",), ("0",), CAT.sar_bands, CAT.opt_bands, {}, None, input_set,
                      CubeSpec(max_dt_days=4))  # fmt: skip

    with pytest.raises(ConfigError, match="input set SC, which reads the same-date cloudy"):
        region_mod.check_inputs(Config(catalog=replace(CAT, s2_collection="")), models("SC"))
    with pytest.raises(ConfigError, match=r"reads a same-date S2 of \['B02'"):
        region_mod.check_inputs(Config(catalog=replace(CAT, opt_bands=("B02",))), models("SC"))
    region_mod.check_inputs(Config(catalog=CAT), models("SCO"))
    # an SC checkpoint records the window of its same-date S2; one that does not is refused
    cfg = Config(model=ModelSpec(ngf=8, depth=3, input_set="SC"), cube=CubeSpec(max_dt_days=3))
    ck = save_untrained_checkpoint(tmp_path / "sc", cfg)
    meta = load_meta(ck)
    assert meta["aux_bands"] == {"cloudy": ["cloudy_B02", "cloudy_B03", "cloudy_B04",
                                            "cloudy_B08", "cloud_mask"]}  # fmt: skip
    assert load_models([ck]).rule.max_dt_days == 3 and load_models([ck]).input_set == "SC"
    blob = torch.load(ck / "model.pt", weights_only=True)
    del blob["meta"]["cube_spec"], blob["meta"]["config"]
    torch.save(blob, ck / "model.pt")
    with pytest.raises(CheckpointError, match=r"same-date S2 window .*cube_spec.max_dt_days"):
        load_models([ck])


@pytest.mark.slow
def test_train_model_sc_on_the_tiled_cube(ray_local, scene, tmp_path, capsys) -> None:
    """``train_model`` end to end for SC (one worker, one epoch) on the tiled build's cube:
    the checkpoint says how to read its inputs, and the test scores ran with clouds laid."""
    from sar2opt.config import load_config
    from sar2opt.train.checkpoint import load_generator
    from sar2opt.train.trainer import train_model

    cfg = load_config(
        None,
        [
            "patches.patch_px=32", "patches.stride_px=16", "patches.block_px=64",
            "patches.gap_px=0", "patches.min_clear_frac=0.9", "model.input_set=SC",
            "model.ngf=8", "model.ndf=8", "model.depth=3", "train.epochs=1",
            "train.batch_size=4", "train.num_workers=1", "train.open_ahead=false",
        ],
    )  # fmt: skip
    ckpt = train_model(scene["cube"], tmp_path / "out", cfg)
    gen, meta = load_generator(ckpt)
    assert meta["input_set"] == "SC"
    assert meta["aux_bands"]["cloudy"][-1] == "cloud_mask"
    assert meta["cube_spec"]["max_dt_days"] == SPEC.max_dt_days and meta["cube_spec"]["cloudy"]
    assert set(meta["norm"]) == {"sar_mean", "sar_std", "opt_mean", "opt_std"}
    with torch.no_grad():  # 2 SAR + 4 cloudy + 1 mask channels in
        assert gen(torch.zeros(1, 7, 32, 32)).shape == (1, 4, 32, 32)
    assert "baseline: train mean colour" in capsys.readouterr().out
