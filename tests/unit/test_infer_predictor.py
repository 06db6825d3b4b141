"""TilePredictor: normalise -> generator -> denormalise, NaN handling, padding to 32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt.infer.predictor import TilePredictor, predict

NORM = {
    "sar_mean": [-12.0, -19.0],
    "sar_std": [3.0, 4.0],
    "opt_mean": [0.05, 0.08],
    "opt_std": [0.02, 0.04],
}
META = {"in_bands": ["vv", "vh"], "out_bands": ["B04", "B08"], "norm": NORM, "model": {}}


class Recorder(torch.nn.Module):
    """Identity that remembers what the generator was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        self.seen.append(x.clone())
        return x


def test_predict_normalises_and_denormalises_exactly() -> None:
    rng = np.random.default_rng(0)
    sar = np.stack([rng.normal(-12, 3, (3, 64, 64)), rng.normal(-19, 4, (3, 64, 64))], axis=1)
    sar = sar.astype(np.float32)  # (B=3, C=2, 64, 64)
    model = Recorder()
    pred = predict(model, sar, NORM)
    assert pred.shape == sar.shape and pred.dtype == np.float32
    x = model.seen[0].numpy()
    np.testing.assert_allclose(x[:, 0], (sar[:, 0] + 12) / 3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x[:, 1], (sar[:, 1] + 19) / 4, rtol=1e-5, atol=1e-5)
    # identity generator: optical = normalised SAR * opt_std + opt_mean
    np.testing.assert_allclose(pred[:, 0], (sar[:, 0] + 12) / 3 * 0.02 + 0.05, atol=1e-6)
    np.testing.assert_allclose(pred[:, 1], (sar[:, 1] + 19) / 4 * 0.04 + 0.08, atol=1e-6)


def test_predict_nan_becomes_band_mean_and_output_nan() -> None:
    sar = np.full((1, 2, 32, 32), -12.0, np.float32)
    sar[0, 1] = -19.0
    sar[0, 0, 5, 7] = np.nan  # VV missing at one pixel
    sar[0, 1, 10:12, :] = np.nan  # VH missing on two rows
    model = Recorder()
    pred = predict(model, sar, NORM)
    x = model.seen[0].numpy()
    assert np.isfinite(x).all()
    assert x[0, 0, 5, 7] == 0.0 and (x[0, 1, 10:12] == 0.0).all()
    invalid = np.zeros((32, 32), bool)
    invalid[5, 7] = True
    invalid[10:12] = True
    assert np.isnan(pred[0, :, invalid]).all()  # every output band NaN where SAR invalid
    assert np.isfinite(pred[0, :, ~invalid]).all()
    np.testing.assert_allclose(pred[0, 0, ~invalid], 0.05, atol=1e-7)


@pytest.mark.parametrize("h, w", [(40, 70), (20, 45), (1, 1)])
def test_predict_pads_to_multiple_of_32_and_crops_back(h: int, w: int) -> None:
    rng = np.random.default_rng(1)
    sar = rng.normal(-12, 3, (2, 2, h, w)).astype(np.float32)
    model = Recorder()
    pred = predict(model, sar, NORM)
    assert pred.shape == (2, 2, h, w)
    x = model.seen[0]
    assert x.shape[-2:] == (-(-h // 32) * 32, -(-w // 32) * 32)
    if h > 1:  # reflect padding: the first padded row mirrors row h-2
        np.testing.assert_allclose(x[:, :, h, :w].numpy(), x[:, :, h - 2, :w].numpy())


def test_tile_predictor_call_passes_keys_through() -> None:
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    tp = TilePredictor.from_model(conv, META, device="cpu")
    batch = {
        "sar": np.full((3, 2, 32, 32), -12.0, np.float32),
        "t": np.array([0, 1, 1]),
        "row": np.array([0, 0, 224]),
        "col": np.array([0, 224, 0]),
        "time": np.array(["a", "b", "b"]),
    }
    batch["sar"][1, 0, 0, 0] = np.nan
    out = tp(batch)
    assert "sar" not in out
    assert out["pred"].shape == (3, 2, 32, 32) and out["pred"].dtype == np.float32
    for k in ("t", "row", "col", "time"):
        np.testing.assert_array_equal(out[k], batch[k])
    assert out["valid"].shape == (3, 32, 32) and not out["valid"][1, 0, 0]
    assert np.isnan(out["pred"][1, :, 0, 0]).all()
    assert tp.out_bands == ["B04", "B08"] and not conv.training


def test_tile_predictor_loads_checkpoint_once(tmp_path) -> None:
    from sar2opt.config import ModelSpec, config_to_dict
    from sar2opt.models import build_generator
    from sar2opt.train import checkpoint as ckpt

    spec = ModelSpec(ngf=4, depth=5)
    gen = build_generator(spec, 2, 2)
    meta = dict(META, model=config_to_dict(spec), config={}, git_sha="test")
    ckpt.save_checkpoint(tmp_path, gen, meta)
    tp = TilePredictor(tmp_path, device="auto")
    assert tp.device.type in ("cpu", "cuda")
    out = tp({"sar": np.full((2, 2, 64, 64), -12.0, np.float32), "t": np.array([0, 1])})
    assert out["pred"].shape == (2, 2, 64, 64) and np.isfinite(out["pred"]).all()


def _s1_catalog(tmp_path, asset_keys: dict[str, str]):
    """One S1 item over a 32 x 64 px grid, its bands stored under ``asset_keys`` names."""
    import rasterio

    from sar2opt.cube.clean_s1 import db_to_linear
    from sar2opt.grid import GridSpec, lonlat_bounds

    grid = GridSpec(32721, 10.0, (700000, 9500000, 700640, 9500320))
    rng = np.random.default_rng(1)
    db = {"vv": rng.uniform(-20, -5, grid.shape), "vh": rng.uniform(-26, -12, grid.shape)}
    assets = {}
    for band, key in asset_keys.items():
        path = tmp_path / f"{key}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", height=grid.height, width=grid.width, count=1,
            dtype="float32", crs=grid.crs, transform=grid.transform, nodata=-32768,
        ) as dst:  # fmt: skip
            dst.write(db_to_linear(db[band]).astype("float32"), 1)
        assets[key] = {"href": str(path), "type": "image/tiff", "roles": ["data"]}
    w, s, e, n = lonlat_bounds(grid)
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "S1A_test",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": "2023-07-01T09:15:00Z",
            "proj:code": "EPSG:32721",  # STAC 1.1: no proj:epsg, the profile adds it
            "proj:shape": list(grid.shape),
            "proj:transform": [*list(grid.transform)[:6], 0.0, 0.0, 1.0],  # 9 elements, as PC
        },
        "links": [],
        "assets": assets,
    }
    return grid, item, db


def test_read_sar_db_rekeys_assets_through_the_collection_profile(tmp_path) -> None:
    from sar2opt.infer.read import read_sar_db
    from sar2opt.profiles import CollectionProfile

    # a provider that names the S1 assets otherwise (as Earth Search names S2 bands)
    grid, item, db = _s1_catalog(tmp_path, {"vv": "VV-gamma0", "vh": "VH-gamma0"})
    profile = CollectionProfile(
        "test", "s1-test", "s1-rtc", (("vv", "VV-gamma0"), ("vh", "VH-gamma0")), nodata=-32768
    )
    sar = read_sar_db([item], grid.subgrid(8, 16, 16, 32), ["vv", "vh"], profile)
    assert sar.shape == (2, 16, 32)
    for i, band in enumerate(("vv", "vh")):
        np.testing.assert_allclose(sar[i], db[band][8:24, 16:48], atol=1e-4)
    assert "VV-gamma0" in item["assets"]  # the caller's item is not modified


def test_read_sar_db_signs_in_the_reading_process_and_refuses_grd(tmp_path, monkeypatch) -> None:
    from sar2opt import profiles
    from sar2opt.infer.read import read_sar_db
    from sar2opt.profiles import PROFILES, UnsupportedCollectionError, profile_for

    grid, item, _ = _s1_catalog(tmp_path, {"vv": "vv", "vh": "vh"})
    signed = []

    def sign(it, profile):  # planetary_computer.sign would add a SAS token to each href
        signed.append((it["id"], profile.signing))
        return it

    monkeypatch.setattr(profiles, "sign_item", sign)
    pc = profile_for("https://planetarycomputer.microsoft.com/api/stac/v1", "sentinel-1-rtc")
    window = grid.subgrid(0, 0, 32, 64)
    assert np.isfinite(read_sar_db([item], window, ["vv", "vh"], pc)).all()
    assert signed == [("S1A_test", "planetary-computer")]
    grd = PROFILES[("earth-search", "sentinel-1-grd")]
    with pytest.raises(UnsupportedCollectionError, match="radar geometry"):
        read_sar_db([item], window, ["vv", "vh"], grd)


class StridedRecorder(Recorder):
    """An identity with a generator's ``stride`` (the 8-level pix2pix U-Net needs 256)."""

    stride = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 256 == 0 and x.shape[-1] % 256 == 0
        self.seen.append(x.clone())
        return x


def test_predict_pads_to_the_models_stride_not_32() -> None:
    from sar2opt.infer.predictor import model_stride

    sar = np.random.default_rng(2).normal(-12, 3, (1, 2, 40, 300)).astype(np.float32)
    model = StridedRecorder()
    pred = predict(model, sar, NORM)
    assert model.seen[0].shape[-2:] == (256, 512) and pred.shape == (1, 2, 40, 300)
    np.testing.assert_allclose(pred[0, 0], (sar[0, 0] + 12) / 3 * 0.02 + 0.05, atol=1e-6)
    assert model_stride(torch.nn.Conv2d(2, 2, 3)) == 32  # Conv2d.stride is a tuple: ignored
    assert model_stride(Recorder()) == 32


def hypothesis_stats(preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: mean (B, C, H, W) and spread (B, H, W) over hypotheses ``preds``
    (K, B, C, H, W): the population std over K, averaged over bands."""
    preds = np.asarray(preds, dtype=np.float32)
    return preds.mean(axis=0), preds.std(axis=0).mean(axis=1).astype(np.float32)


def test_tile_predictor_hypotheses_mean_and_spread_match_numpy() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).eval()
    sar = np.random.default_rng(3).normal(-12, 3, (2, 2, 32, 64)).astype(np.float32)
    sar[1, 0, 3, 4] = np.nan
    out = TilePredictor.from_model(conv, META, flips=4)({"sar": sar})
    flips = [(), (-1,), (-2,), (-2, -1)]
    preds = [
        np.flip(predict(conv, np.flip(sar, a) if a else sar, NORM), a)
        if a
        else predict(conv, sar, NORM)
        for a in flips
    ]
    mean, spread = hypothesis_stats(np.stack(preds))
    np.testing.assert_allclose(out["pred"], mean, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(out["spread"], spread, atol=1e-6, equal_nan=True)
    assert np.isnan(out["pred"][1, :, 3, 4]).all() and np.nanmax(out["spread"]) > 1e-4


def test_two_hypotheses_spread_is_half_their_gap_and_one_says_nothing() -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).eval()  # not flip-invariant: flips disagree
    sar = np.random.default_rng(4).normal(-12, 3, (1, 2, 8, 8)).astype(np.float32)
    one = TilePredictor.from_model(conv, META, flips=1)({"sar": sar})
    assert np.isnan(one["spread"]).all() and np.isfinite(one["pred"]).all()
    two = TilePredictor.from_model(conv, META, flips=2)({"sar": sar})
    a = predict(conv, sar, NORM)
    b = np.flip(predict(conv, np.flip(sar, -1), NORM), -1)
    np.testing.assert_allclose(two["pred"], (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(two["spread"], np.abs(a - b).mean(axis=1) / 2, atol=1e-6)
    assert two["spread"].max() > 1e-4


def test_checkpoints_must_carry_what_their_input_set_reads(monkeypatch) -> None:
    """Every input set loads; a checkpoint lacking the statistics of an input (the DEM's) or
    the prior window of its cube is refused with one line naming what is missing."""
    from sar2opt.errors import ConfigError
    from sar2opt.infer.predictor import load_models
    from sar2opt.train import checkpoint

    dem_norm = dict(NORM, dem_mean=[100.0], dem_std=[20.0])
    ok = {
        "S": META,
        "SD": dict(META, input_set="SD", norm=dem_norm),
        "SO": dict(META, input_set="SO", cube_spec={"prior_days": 30, "max_dt_days": 5}),
        "SOD": dict(META, input_set="SOD", norm=dem_norm, cube_spec={"prior_days": 30}),
    }
    for input_set, meta in ok.items():
        monkeypatch.setattr(checkpoint, "load_meta", lambda c, meta=meta: meta)
        monkeypatch.setattr("sar2opt.infer.predictor.sha256_file", lambda p: "0")
        models = load_models(["/ckpt"])
        assert models.input_set == input_set
    assert models.rule.prior_days == 30 and models.rule.max_dt_days == 6.0  # the default
    bad = {
        "lacks the normalisation norm.dem_mean, norm.dem_std": dict(META, input_set="SD"),
        r"does not record the prior window .*cube_spec.prior_days": dict(META, input_set="SO"),
        "input set SAR; inference supports S, SD, SO, SOD": dict(META, input_set="SAR"),
    }
    for match, meta in bad.items():
        monkeypatch.setattr(checkpoint, "load_meta", lambda c, meta=meta: meta)
        with pytest.raises((ConfigError, checkpoint.CheckpointError), match=match):
            load_models(["/ckpt"])
    metas = iter([ok["SO"], dict(ok["SO"], cube_spec={"prior_days": 60})])
    monkeypatch.setattr(checkpoint, "load_meta", lambda c: next(metas))
    with pytest.raises(ConfigError, match="other cube settings"):
        load_models(["/a", "/b"])


def test_load_models_reads_metadata_without_building_generators(tmp_path, monkeypatch) -> None:
    from sar2opt.config import Config, ModelSpec
    from sar2opt.infer.predictor import load_models, sha256_file
    from sar2opt.train import checkpoint

    ckpt = checkpoint.save_untrained_checkpoint(
        tmp_path / "c", Config(model=ModelSpec(ngf=8, depth=5)), git_sha="test"
    )

    def no_build(*a, **k):
        raise AssertionError("a generator was built")

    monkeypatch.setattr(checkpoint, "build_generator", no_build)
    models = load_models([ckpt, ckpt])
    assert models.in_bands == ("vv", "vh") and models.out_bands == ("B02", "B03", "B04", "B08")
    assert models.sha256 == (sha256_file(ckpt / "model.pt"),) * 2 and models.git_sha == "test"
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        load_models([tmp_path / "none"])


def test_sha256_file(tmp_path) -> None:
    from sar2opt.infer.predictor import sha256_file

    p = tmp_path / "model.pt"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
