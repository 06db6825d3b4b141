"""One definition of the inputs: for every input set, the tensor the inference reader feeds the
model for a window and date is the cube's training patch of that window and date, on the
synthetic scene; and the missing-input rules (no prior yet, a DEM gap) are what they say.

The cube is built by the tiled builder ``jobs/build_cube.py`` runs (searches answered from the
scene's items); the inference side is the job's own wiring (``region.aux_source``,
``read.CatalogSar``, ``run.process_strip``, ``predictor.TilePredictor``) with a model that
records its input. Both read the same COGs through the same windowed reader, so the
comparison is exact, bit for bit.
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
from sar2opt.config import CatalogSpec, Config, CubeSpec
from sar2opt.cube import build, tiled_build
from sar2opt.cube.load import group_acquisitions
from sar2opt.data.inputs import INPUT_SETS, input_keys, model_input
from sar2opt.data.stream import read_patches
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.infer import region as region_mod
from sar2opt.infer.composite import (
    SOURCE_CLOUD_REMOVED,
    SOURCE_NODATA,
    SOURCE_SYNTH,
    SOURCE_SYNTH_PRIOR,
)
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.predictor import Models, TilePredictor, model_inputs
from sar2opt.infer.read import CatalogSar
from sar2opt.infer.run import FillJob, Strip, process_strip, strip_window
from sar2opt.profiles import profile_for
from sar2opt.train.trainer import aux_bands
from tests.helpers.data import search_in

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE_KM = 1.28  # 128 x 128 px
DATES = ("2023-07-01", "2023-08-10")  # S1 07-01, 07-13, 07-25, 08-06; S2 07-03 ... 07-28
CAT = CatalogSpec(stac_url="http://127.0.0.1:1/stac", dem_collection="cop-dem-glo-30")
# prior: the latest clear S2 4-9 days before each date: none for 07-01 (the first S2 is
# 07-03); 07-08 (a fifth clear: cloud edges everywhere) for 07-13; 07-18 (clear) for 07-25;
# 07-28 (nearly all cloud) for 08-06. Clouds are dilated by 3 px, across window edges.
# Same-date S2 (±4 d): 07-03 for 07-01, 07-13 for 07-13, 07-23 (then 07-28) for 07-25, none
# for 08-06.
SPEC = CubeSpec(
    epsg=32721, max_dt_days=4, prior_days=5, cloud_dilate_px=3, chunk_px=32, tile_px=64,
    cloudy=True,
)  # fmt: skip
RULE = {"max_dt_days": 4, "prior_days": 5, "cloud_dilate_px": 3}  # the checkpoint's
NORM = {
    "sar_mean": [-9.0, -15.5],
    "sar_std": [2.5, 3.0],
    "opt_mean": [0.04, 0.06, 0.05, 0.28],
    "opt_std": [0.015, 0.02, 0.025, 0.06],
    "dem_mean": [140.0],
    "dem_std": [35.0],
}
TILE_PX, OVERLAP_PX = 64, 32  # 32 px blocks in 64 px windows: not on the cube's 64 px tiles


def _scene(root, items) -> dict:
    """The tiled training cube of ``items`` (a generated scene's) under ``root``."""
    aoi = box(*lonlat_bounds(scene_grid(SIZE_KM))).buffer(-1e-4)
    s1 = [it for it in items if it["collection"] == CAT.s1_collection]
    cube = root / "cube.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "search_s1", lambda *a, **k: s1)
        mp.setattr(build, "search_aoi", search_in(items))
        tiled_build.build_tiled(aoi, *DATES, catalog=CAT, spec=SPEC, out=cube, log=lambda *_: None)
    return {"items": items, "aoi": aoi, "cube": cube, "s1": s1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn-inputs")
    return _scene(root, generate_scene(root / "catalog", size_km=SIZE_KM, n_s1=4, n_s2=6))


def _with_clp(item: dict, path) -> dict:
    """A copy of the S2 ``item`` with a ``CLP`` asset (uint8 percent, nodata 255, as the
    ingest writes it) that disagrees with the brightness test: 80 on diagonal stripes across
    the window edges, 0 elsewhere (the scene's white clouds too, like snow), 255 (unknown:
    the brightness test) in one block."""
    import rasterio

    with rasterio.open(item["assets"]["B02"]["href"]) as src:
        profile = dict(src.profile)
        h, w = src.shape
    rows, cols = np.mgrid[:h, :w]
    clp = np.where(((rows + cols) // 20) % 3 == 0, 80, 0).astype("uint8")
    clp[90:110, 0:40] = 255
    profile.update(driver="GTiff", dtype="uint8", nodata=255, predictor=1)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(clp, 1)
    out = {**item, "assets": dict(item["assets"])}
    out["assets"]["CLP"] = {
        "href": str(path),
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["cloud"],
        "raster:bands": [{"data_type": "uint8", "nodata": 255, "unit": "percent"}],
    }
    return out


@pytest.fixture(scope="module")
def clp_scene(tmp_path_factory):
    """The scene with a ``CLP`` asset on S2 07-03, 07-08, 07-18 and 07-23 (07-13 and 07-28
    keep the brightness test; priors and same-date S2 come from both kinds): the cube and
    the inference readers both read it."""
    root = tmp_path_factory.mktemp("syn-inputs-clp")
    items = generate_scene(root / "catalog", size_km=SIZE_KM, n_s1=4, n_s2=6)
    s2 = [i for i, it in enumerate(items) if it["collection"] == CAT.s2_collection]
    for j, k in enumerate(s2):
        if j % 3 != 2:
            items[k] = _with_clp(items[k], root / f"clp_{k}.tif")
    return _scene(root, items)


class Recorder(torch.nn.Module):
    """A 'generator' that records the input it is given (and predicts a constant)."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.n_out, self.seen = n_out, []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone().contiguous())
        return torch.zeros(x.shape[0], self.n_out, *x.shape[2:]) + self.w


def _meta(input_set: str) -> dict:
    return {
        "in_bands": list(CAT.sar_bands),
        "out_bands": list(CAT.opt_bands),
        "norm": NORM,
        "model": {"input_set": input_set},
        "input_set": input_set,
        "cube_spec": RULE,
    }


def _inference(scene, input_set: str, monkeypatch, rule: CubeSpec | None = None):
    """What ``fill_zone`` builds for the cube's grid: the SAR reader, the aux reader (from
    ``Region.aux_items``' searches), the lattice, the time steps."""
    from sar2opt.infer.predictor import input_rule

    monkeypatch.setattr(region_mod, "search_aoi", search_in(scene["items"]))
    monkeypatch.setattr(build, "search_aoi", search_in(scene["items"]))
    grid = GridSpec.from_dict(xr.open_zarr(scene["cube"]).attrs["grid"])
    models = Models(
        ("/ckpt",), ("0",), CAT.sar_bands, CAT.opt_bands, {}, None, input_set,
        rule or input_rule(_meta(input_set)),
    )  # fmt: skip
    region = region_mod.Region(Config(catalog=CAT, cube=SPEC), scene["aoi"], (), models)
    groups = group_acquisitions(scene["s1"])
    times = tuple(iso for iso, _ in groups)
    acquisitions = [(iso, tuple(g)) for iso, g in groups]
    aux = region_mod.aux_source(region, grid, acquisitions, region.aux_items(*DATES))
    sar = CatalogSar(
        grid,
        tuple(tuple(g) for _, g in groups),
        CAT.sar_bands,
        profile_for(CAT.stac_url, CAT.s1_collection),
    )
    return grid, times, sar, aux


def _training_patches(cube, input_set, rows, key=None):
    """The trainer's model input for index rows (time, row, col): ``read_patches`` + the
    trainer's ``model_input`` (or the batch's ``key``)."""
    ds = xr.open_zarr(cube)
    opt = list(ds.attrs["opt_bands"])
    aux = aux_bands(dict(ds.attrs), opt, input_set)
    got = read_patches(
        cube, pd.DataFrame(rows, columns=["time", "row", "col"]),
        sar_bands=ds.attrs["sar_bands"], opt_bands=opt, aux=aux, norm=NORM, patch_px=TILE_PX,
    )  # fmt: skip
    return got[key] if key else model_input(got, input_set).numpy()


def _infer_and_train(scene, input_set: str, monkeypatch):
    """Every window and date of the scene's grid through the inference fill (the model's
    input recorded) and the trainer's patch of the same windows: (x_infer, x_train, rows,
    [(window, core, source)])."""
    grid, times, sar, aux = _inference(scene, input_set, monkeypatch)
    lat = BlockLattice(grid, TILE_PX, OVERLAP_PX)
    rec = Recorder(len(CAT.opt_bands))
    predictor = TilePredictor.from_model(rec, _meta(input_set))
    written = []
    job = FillJob(
        "unused.zarr", lat, sar, batch_size=16, aux=aux,
        write=lambda job, strip, blocks: written.append((strip, blocks)),
    )  # fmt: skip
    rows, seen, with_prior = [], [], []
    for t in range(len(times)):
        for bi in range(lat.n_rows):
            # whole block rows at even dates, one block per strip at odd ones: windows with
            # edges inside the grid, where the cloud mask needs its halo
            cols = [tuple(range(lat.n_cols))] if t % 2 == 0 else [(bj,) for bj in range(lat.n_cols)]
            for bjs in cols:
                strip = Strip(t, times[t], bi, bjs)
                n = len(rec.seen)
                process_strip(strip, job, predictor)
                assert len(rec.seen) == n + 1  # one forward per strip (batch_size 16)
                seen += list(rec.seen[-1].numpy())
                strip_, blocks = written[-1]  # composed: (t, core, optical, source, ...)
                assert [b[1] for b in blocks] == [lat.core(bi, bj) for bj in strip_.bjs]
                with_prior += [
                    (lat.window(bi, bj), b[1], b[3])
                    for bj, b in zip(strip_.bjs, blocks, strict=True)
                ]
                rows += [(t, *lat.window(bi, bj)[:2]) for bj in strip.bjs]
    return np.stack(seen), _training_patches(scene["cube"], input_set, rows), rows, with_prior


@pytest.mark.parametrize("input_set", list(INPUT_SETS))
def test_inference_reads_the_training_patch_of_every_window_and_date(
    scene, input_set, monkeypatch
) -> None:
    x_infer, x_train, rows, with_prior = _infer_and_train(scene, input_set, monkeypatch)
    assert x_infer.shape == x_train.shape == (len(rows), _channels(input_set), TILE_PX, TILE_PX)
    # the same numbers; the trainer never sees a missing value (its patch index drops such
    # patches), inference gives the band mean (0) there
    missing = np.isnan(x_train)
    np.testing.assert_array_equal(x_infer, np.where(missing, np.float32(0), x_train))
    ch = _slices(input_set)
    assert not missing[:, ch["sar"]].any()  # the scene has SAR everywhere
    t = np.array([r[0] for r in rows])
    expected = np.full((len(rows), TILE_PX, TILE_PX), SOURCE_SYNTH, np.uint8)
    if "prior" in input_keys(input_set):
        prior = x_train[:, ch["prior"]]
        frac = [np.isfinite(prior[t == k]).all(axis=1).mean() for k in range(4)]
        # none for the first date (no S2 before it); under clouds none
        assert frac[0] == 0 and 0.1 < frac[1] < 0.5 and frac[2] == 1 and 0 < frac[3] < 0.1
        # ``source`` says "synthesis with prior" exactly where the model had a prior
        expected[np.isfinite(prior).all(axis=1)] = SOURCE_SYNTH_PRIOR
    if "cloudy" in input_keys(input_set):
        cloudy = x_train[:, ch["cloudy"]]
        assert not np.isnan(cloudy).any()  # a cloud or a missing S2 is masked, not NaN
        refl, mask = cloudy[:, :-1], cloudy[:, -1]
        assert set(np.unique(mask)) == {0.0, 1.0}
        assert (refl[np.broadcast_to(mask[:, None] == 1, refl.shape)] == 0).all()
        # 07-03 and 07-13 are clear; 07-23 (the nearest to 07-25) is clouded over; no S2
        # within ±4 d of 08-06 (mask edges across windows: test_cloudy_mask_edges_...)
        assert [(mask[t == k] == 0).mean() for k in range(4)] == [1, 1, 0, 0]
        raw = _raw_cloudy(scene["cube"], rows)  # the cube's bands, before standardising
        observed = np.isfinite(raw[:, :-1]).all(axis=1)
        assert observed[t < 3].all() and not observed[t == 3].any()
        assert (observed & (mask == 1)).any()  # clouds were seen, and are masked, not values
        # a clear same-date pixel is the target's pixel (the nearest clear S2): what the model
        # learns to keep; under the mask it learns to fill
        opt = _training_patches(scene["cube"], input_set, rows, key="opt")
        clear = np.broadcast_to(mask[:, None] == 0, refl.shape)
        np.testing.assert_array_equal(refl[clear], opt[clear])
        # ``source``: "cloud removed" wherever the model saw that date's S2 (cloudy or clear)
        expected[observed] = SOURCE_CLOUD_REMOVED
    for k, ((r, c, _, _), (r0, c0, r1, c1), source) in enumerate(with_prior):
        np.testing.assert_array_equal(source, expected[k, r0 - r : r1 - r, c0 - c : c1 - c])


@pytest.mark.parametrize("input_set", ["SO", "SCOD"])
def test_inference_reads_the_training_patch_with_clp(
    scene, clp_scene, input_set, monkeypatch
) -> None:
    """The same identity where S2 items carry ``CLP``: the cube and the inference readers
    test clouds by one rule (CLP where an item has it, brightness elsewhere)."""
    x_infer, x_train, rows, _ = _infer_and_train(clp_scene, input_set, monkeypatch)
    assert x_infer.shape == x_train.shape == (len(rows), _channels(input_set), TILE_PX, TILE_PX)
    np.testing.assert_array_equal(x_infer, np.where(np.isnan(x_train), np.float32(0), x_train))
    # CLP decided: the same windows of the cube without CLP give other inputs
    plain = _training_patches(scene["cube"], input_set, rows)
    aux = slice(2, None)  # the prior, cloudy and mask channels
    assert not np.array_equal(x_train[:, aux], plain[:, aux], equal_nan=True)


def _channels(input_set: str) -> int:
    return {"S": 2, "SD": 3, "SO": 6, "SOD": 7, "SC": 7, "SCO": 11, "SCOD": 12}[input_set]


def _slices(input_set: str) -> dict[str, slice]:
    """Channel ranges of each input key in the model's input (sar, cloudy, prior, dem)."""
    width = {"sar": 2, "cloudy": 5, "prior": 4, "dem": 1}
    out, i = {}, 0
    for k in input_keys(input_set):
        out[k] = slice(i, i + width[k])
        i += width[k]
    return out


def _raw_cloudy(cube, rows) -> np.ndarray:
    """The cube's ``cloudy_<band>`` and ``cloud_mask`` bands (N, 5, P, P) at index rows."""
    da = xr.open_zarr(cube)["cube"]
    bands = [*(f"cloudy_{b}" for b in CAT.opt_bands), "cloud_mask"]
    return np.stack(
        [
            da.isel(time=t, y=slice(r, r + TILE_PX), x=slice(c, c + TILE_PX)).sel(band=bands).values
            for t, r, c in rows
        ]
    )


def test_a_prior_by_another_rule_is_not_the_training_patch(scene, monkeypatch) -> None:
    """Guards the identity test: the reader does depend on the checkpoint's cube settings
    (another prior window, another cloud dilation: other tensors)."""
    rows = [(1, 0, 0), (1, 32, 64)]  # 07-13: its prior S2 is partly cloudy
    x_train = _training_patches(scene["cube"], "SO", rows)
    for other in (CubeSpec(max_dt_days=4, prior_days=12, cloud_dilate_px=3),
                  CubeSpec(max_dt_days=4, prior_days=5, cloud_dilate_px=0)):  # fmt: skip
        grid, times, sar, aux = _inference(scene, "SO", monkeypatch, rule=other)
        for x, (t, r, c) in zip(x_train, rows, strict=True):
            prior = aux.read(t, (r, c, TILE_PX, TILE_PX))["prior"]
            x_prior = x[2:]
            ours = (prior - np.array(NORM["opt_mean"], np.float32)[:, None, None]) / np.array(
                NORM["opt_std"], np.float32
            )[:, None, None]
            assert not np.array_equal(ours, x_prior, equal_nan=True)


def test_the_dem_is_read_only_from_the_items_over_the_window(scene, monkeypatch) -> None:
    grid, times, sar, aux = _inference(scene, "SD", monkeypatch)
    (far,) = (it for it in scene["items"] if it["collection"] == "cop-dem-glo-30")
    far = {**far, "id": "elsewhere", "geometry": None, "bbox": [10.0, 10.0, 10.1, 10.1]}
    far_aux = replace(aux, dem_items=(far,))  # its asset is never opened: all NaN
    assert np.isnan(far_aux.read(0, (0, 0, 8, 8))["dem"]).all()
    assert np.isfinite(aux.read(0, (0, 0, 8, 8))["dem"]).all()


def test_model_inputs_missing_values_rules() -> None:
    """Where a pixel lacks an input: no prior -> the optical mean (0), still predicted; a SAR
    or DEM gap -> the band mean (0) and not valid (no data)."""
    b, h, w = 1, 4, 5
    sar = np.full((b, 2, h, w), -10.0, np.float32)
    prior = np.full((b, 4, h, w), 0.1, np.float32)
    dem = np.full((b, 1, h, w), 200.0, np.float32)
    sar[0, 1, 0, 0] = np.nan
    prior[0, :, 1, 1] = np.nan
    dem[0, 0, 2, 2] = np.nan
    x, valid = model_inputs({"sar": sar, "prior": prior, "dem": dem}, NORM, "SOD")
    assert x.shape == (b, 7, h, w) and x.dtype == np.float32 and np.isfinite(x).all()
    assert (x[0, 2:6, 1, 1] == 0).all() and (x[0, 1, 0, 0] == 0) and (x[0, 6, 2, 2] == 0)
    expected = np.ones((b, h, w), bool)
    expected[0, 0, 0] = expected[0, 2, 2] = False  # the prior gap stays valid
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_allclose(x[0, 6, 0, 1], (200.0 - 140.0) / 35.0, rtol=1e-6)
    np.testing.assert_allclose(x[0, 2:6, 0, 1], (0.1 - np.array(NORM["opt_mean"])) / np.array(
        NORM["opt_std"]), rtol=1e-5)  # fmt: skip
    x_s, valid_s = model_inputs({"sar": sar, "prior": prior, "dem": dem}, NORM, "S")
    assert x_s.shape == (b, 2, h, w) and valid_s.sum() == h * w - 1


def test_a_swath_edge_is_no_evidence_for_the_scene_fit() -> None:
    """Where the SAR is missing (a swath's edge) the same-date S2 is masked too: a scene fit
    learns from the clear pixels, and clear S2 beside the mean SAR would teach it that the
    mean SAR has that colour. Here the west half has no SAR and brighter land: the east
    half's reference errs at the noise's level (0.0008), 4.6 x that with the west kept as
    evidence (what model_inputs gave before)."""
    import torch

    from sar2opt.models.reference import input_slices, scene_reference
    from tests.helpers.infer_fakes import NORM as N1

    rng = np.random.default_rng(0)
    sar = np.stack([rng.uniform(-15, -9, (1, 64, 64)), rng.uniform(-22, -16, (1, 64, 64))], 1)
    b04 = 0.05 + 0.004 * (sar[:, :1] + 12) + rng.normal(0, 0.001, (1, 1, 64, 64))
    west = np.zeros((64, 64), bool)
    west[:, :32] = True
    sar[:, :, west] = np.nan
    b04[:, :, west] = 0.15  # clear land the radar did not see
    cloudy = np.concatenate([b04, np.zeros_like(b04)], axis=1).astype(np.float32)
    x, valid = model_inputs({"sar": sar.astype(np.float32), "cloudy": cloudy}, N1, "SC")
    assert not valid[0][west].any() and valid[0][~west].all()
    assert (x[0, 3][west] == 1).all() and (x[0, 2][west] == 0).all()  # masked, mean colour
    assert (x[0, 3][~west] == 0).all()
    sl = input_slices("SC", 4, 1)
    kept = x.copy()  # the west half as evidence: its S2 unmasked beside the mean SAR
    kept[0, 2][west], kept[0, 3][west] = (0.15 - 0.05) / 0.02, 0.0
    err = {}
    for name, xi in (("masked", x), ("kept", kept)):
        ref = scene_reference(torch.from_numpy(xi), sl)[1].numpy()
        err[name] = np.abs(ref[0, 0] * 0.02 + 0.05 - b04[0, 0])[~west].mean()
    assert err["masked"] < 0.0015 and err["kept"] > 3 * err["masked"], err


def test_source_says_which_evidence_made_each_pixel() -> None:
    """A strip through ``process_strip``: prior -> 3, no prior -> 2, no SAR -> 0 (no clear
    S2 to keep: the composite is off)."""
    from tests.helpers.infer_fakes import GRID, HoleySar, tiny_net

    class Aux:
        keys = ("prior",)

        def read(self, t, window):
            r, c, h, w = window
            prior = np.full((1, h, w), 0.05, np.float32)
            prior[:, :, : w // 2] = np.nan  # no prior on the west half of the strip
            return {"prior": prior}

    net = tiny_net()
    net[0] = torch.nn.Conv2d(3, 4, 3, padding=1)  # sar (2) + prior (1 band: B04) in
    meta = {
        "in_bands": ["vv", "vh"], "out_bands": ["B04"], "model": {}, "input_set": "SO",
        "norm": {"sar_mean": [-12.0, -19.0], "sar_std": [3.0, 4.0], "opt_mean": [0.05],
                 "opt_std": [0.02]},
    }  # fmt: skip
    lat = BlockLattice(GRID, 128, 32)
    out = []

    def write(job, strip, blocks):
        out.extend(blocks)

    job = FillJob("unused.zarr", lat, HoleySar(), batch_size=4, aux=Aux(), write=write)
    strip = Strip(0, "2023-07-03T05:43:12Z", 0, (0, 1))
    process_strip(strip, job, TilePredictor.from_model(net, meta))
    r, c, h, w = strip_window(lat, 0, strip.bjs)
    for _, (r0, c0, r1, c1), optical, source, *_ in out:
        rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None]
        expected = np.where(cols >= c + w // 2, SOURCE_SYNTH_PRIOR, SOURCE_SYNTH)
        expected = np.broadcast_to(expected, (r1 - r0, c1 - c0)).copy()
        hole = (rows < r + 4) & (cols < c + 4)
        expected[hole] = SOURCE_NODATA
        np.testing.assert_array_equal(source, expected.astype(np.uint8))
        assert np.isnan(optical[:, hole]).all() and np.isfinite(optical[:, ~hole]).all()
    assert {int(v) for o in out for v in np.unique(o[3])} == {
        SOURCE_SYNTH, SOURCE_SYNTH_PRIOR, SOURCE_NODATA
    }  # fmt: skip


def test_a_catalog_that_cannot_supply_an_input_stops_before_any_work(scene, monkeypatch) -> None:
    from sar2opt.errors import CatalogError, ConfigError
    from sar2opt.infer.predictor import input_rule

    def models(input_set):
        return Models(
            ("/ck",), ("0",), CAT.sar_bands, CAT.opt_bands, {}, None, input_set,
            input_rule(_meta(input_set)),
        )  # fmt: skip

    no_dem = Config(catalog=replace(CAT, dem_collection=None))
    with pytest.raises(ConfigError, match="input set SD, which reads a DEM, but the catalog"):
        region_mod.check_inputs(no_dem, models("SD"))
    region_mod.check_inputs(no_dem, models("SO"))  # needs no DEM
    with pytest.raises(ConfigError, match="names no S2 collection"):
        region_mod.check_inputs(Config(catalog=replace(CAT, s2_collection="")), models("SOD"))
    with pytest.raises(ConfigError, match=r"reads a prior of \['B02', 'B03', 'B04', 'B08'\]"):
        region_mod.check_inputs(Config(catalog=replace(CAT, opt_bands=("B02",))), models("SO"))
    # the DEM collection is configured but has nothing over the AOI
    region = region_mod.Region(Config(catalog=CAT), scene["aoi"], (), models("SOD"))
    monkeypatch.setattr(build, "search_aoi", lambda *a, **k: [])
    monkeypatch.setattr(region_mod, "search_aoi", lambda *a, **k: [])
    with pytest.raises(CatalogError, match="no cop-dem-glo-30 items cover the AOI .*reads a DEM"):
        region.aux_items(*DATES)
