"""The synthetic scene is deterministic, physically ordered and learnable (measured on the COGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2opt.catalog.synthetic import BARE, FOREST, PASTURE, WATER, generate_scene

SIZE_KM = 2.56  # 256 x 256 px: small but holds river, highway, side roads and clouds


def _read(href: str | Path, band: int = 1) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(band)


def _truth(out: Path, item_id: str, kind: str = "landcover", band: int = 1) -> np.ndarray:
    return _read(out / "truth" / f"{item_id}_{kind}.tif", band)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    items = generate_scene(out, seed=3, size_km=SIZE_KM, n_s1=4, n_s2=5)
    s1 = [i for i in items if i["collection"] == "sentinel-1-rtc"]
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    return out, s1, s2


def test_ids_dates_and_files(scene):
    out, s1, s2 = scene
    assert [i["id"] for i in s1] == [
        "S1A_IW_SYNTH_20230701T091500",
        "S1A_IW_SYNTH_20230713T091500",
        "S1A_IW_SYNTH_20230725T091500",
        "S1A_IW_SYNTH_20230806T091500",
    ]
    assert s2[0]["id"] == "S2B_MSIL2A_SYNTH_20230703T140000"
    assert s2[1]["id"] == "S2A_MSIL2A_SYNTH_20230708T140000"
    assert (out / "items.parquet").is_file() and (out / "items.json").is_file()
    for it in s1 + s2:
        for asset in it["assets"].values():
            assert Path(asset["href"]).is_absolute() and Path(asset["href"]).is_file()
            assert Path(asset["href"]).parent == out / "cogs"
    with rasterio.open(s1[0]["assets"]["vv"]["href"]) as src:
        assert src.crs.to_epsg() == 32721 and src.shape == (256, 256)
        assert list(src.transform)[:6] == s1[0]["properties"]["proj:transform"]


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(size_km=0.64, n_s1=1, n_s2=2)
    a = generate_scene(tmp_path / "a", seed=7, **kw)
    b = generate_scene(tmp_path / "b", seed=7, **kw)
    c = generate_scene(tmp_path / "c", seed=8, **kw)
    for ia, ib, ic in zip(a, b, c, strict=True):
        assert ia["id"] == ib["id"] and ia["properties"] == ib["properties"]
        key = next(k for k in ("vv", "B04", "data") if k in ia["assets"])
        va, vb, vc = (_read(i["assets"][key]["href"]) for i in (ia, ib, ic))
        np.testing.assert_array_equal(va, vb)
        assert not np.array_equal(va, vc)


def test_sigma0_class_ordering(scene):
    out, s1, _ = scene
    it = s1[0]
    lc = _truth(out, it["id"])
    for cls in (FOREST, PASTURE, WATER):
        assert (lc == cls).sum() > 200, f"class {cls} missing from the test scene"
    db = {}
    for pol in ("vv", "vh"):
        lin = _read(it["assets"][pol]["href"]).astype(np.float64)
        db[pol] = {c: 10 * np.log10(lin[lc == c].mean()) for c in (FOREST, PASTURE, BARE, WATER)}
    for pol in ("vv", "vh"):
        assert db[pol][WATER] < min(db[pol][c] for c in (FOREST, PASTURE, BARE)) - 5
    assert db["vh"][FOREST] > db["vh"][PASTURE] + 2
    assert db["vv"][FOREST] > db["vv"][PASTURE] + 1
    assert db["vh"][FOREST] == pytest.approx(-12.5, abs=1.0)
    assert db["vv"][WATER] == pytest.approx(-20.0, abs=1.5)


def test_deforestation_grows(scene):
    out, s1, _ = scene
    maps = [_truth(out, it["id"]) for it in s1]
    non_forest = [(m != FOREST).mean() for m in maps]
    assert all(b > a for a, b in zip(non_forest, non_forest[1:], strict=False)), non_forest
    for early, late in zip(maps, maps[1:], strict=False):  # nothing regrows within a month
        assert not np.any((early != FOREST) & (late == FOREST))
    # The SAR sees it: pixels cleared between the first and last date lose VH backscatter.
    cleared = (maps[0] == FOREST) & (maps[-1] == BARE)
    assert cleared.sum() > 100
    vh0 = _read(s1[0]["assets"]["vh"]["href"])[cleared].mean()
    vh1 = _read(s1[-1]["assets"]["vh"]["href"])[cleared].mean()
    assert 10 * np.log10(vh0 / vh1) > 2.0


def test_clouds_vary_are_bright_and_flagged_by_scl_not_qa60(scene):
    out, _, s2 = scene
    covers = [it["properties"]["eo:cloud_cover"] for it in s2]
    assert min(covers) < 3 and max(covers) > 50, covers
    # The most cloudy partly-cloudy date (a 2.56 km scene can be fully overcast).
    cloudy = max(
        (it for it in s2 if it["properties"]["eo:cloud_cover"] < 95),
        key=lambda it: it["properties"]["eo:cloud_cover"],
    )
    assert cloudy["properties"]["eo:cloud_cover"] > 10
    scl = _read(cloudy["assets"]["SCL"]["href"])
    qa60 = _read(cloudy["assets"]["QA60"]["href"])
    assert not qa60.any()  # QA60 is all zeros, as in the real archive
    cloud = np.isin(scl, (8, 9))
    assert 100 * cloud.mean() == pytest.approx(cloudy["properties"]["eo:cloud_cover"], abs=0.01)
    rgb = np.stack([_read(cloudy["assets"][b]["href"]) for b in ("B02", "B03", "B04")]) / 1e4
    thick = scl == 9
    land = np.isin(scl, (4, 5))
    assert thick.sum() > 100 and land.sum() > 100
    assert rgb[:, thick].mean() > 0.3 > 3 * rgb[:, land].mean()
    white = rgb[:, thick].min(axis=0) / rgb[:, thick].max(axis=0)
    assert np.median(white) > 0.9  # clouds are white in all bands
    # Shadows (SCL 3) are darker than the same ground in the cloud-free truth, never brighter;
    # their cores (a third of them at least) lose over 20 % of the light.
    shadow = scl == 3
    assert shadow.sum() > 50
    img = _read(cloudy["assets"]["B08"]["href"])[shadow].astype(float)
    clear_nir = _read(cloudy["assets"]["truth_B08"]["href"])[shadow].astype(float)
    ratio = img / clear_nir
    assert (ratio <= 1.0 + 1e-3).all()
    assert np.mean(ratio < 0.8) > 0.3, np.percentile(ratio, [10, 50, 90])


def test_sar_and_optical_share_texture(scene):
    """Learnability: within forest, VH (speckle averaged out) tracks NIR via the biomass field."""
    out, s1, s2 = scene
    lc = _truth(out, s1[0]["id"])
    vh = _read(s1[0]["assets"]["vh"]["href"]).astype(np.float64)
    clear_item = min(s2, key=lambda it: it["properties"]["eo:cloud_cover"])
    nir = _read(clear_item["assets"]["B08"]["href"]).astype(np.float64)
    k = 8
    h, w = lc.shape

    def blocks(a):
        return a[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k)

    pure = (blocks(lc) == FOREST).all(axis=(1, 3))
    vh_b = 10 * np.log10(blocks(vh).mean(axis=(1, 3)))[pure]
    nir_b = blocks(nir).mean(axis=(1, 3))[pure]
    assert pure.sum() > 50
    assert np.corrcoef(vh_b, nir_b)[0, 1] > 0.4
