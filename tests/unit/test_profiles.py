"""Catalog profiles on recorded real STAC items (Planetary Computer, Earth Search), offline."""

import json
import sys
import types

import numpy as np
import pytest

from sar2opt import profiles
from sar2opt.errors import CatalogError
from sar2opt.profiles import (
    EARTH_SEARCH,
    LOCAL,
    PLANETARY_COMPUTER,
    UnsupportedCollectionError,
    affine_from_proj,
    asset_grid,
    normalise_item,
    prepare_items,
    profile_for,
    provider_for_url,
    rekey_assets,
    scale_offset,
    sign_item,
)
from tests.helpers.data import SHARED_DATA

STAC = SHARED_DATA / "stac"
PC = "https://planetarycomputer.microsoft.com/api/stac/v1"
ES = "https://earth-search.aws.element84.com/v1"

requires_stac = pytest.mark.skipif(not STAC.is_dir(), reason=f"no recorded STAC at {STAC}")


def _one(prefix):
    (path,) = sorted(STAC.glob(prefix + "*.json"))
    return json.loads(path.read_text())


def test_provider_from_url():
    assert provider_for_url(PC) == PLANETARY_COMPUTER
    assert provider_for_url(ES) == EARTH_SEARCH
    assert provider_for_url("http://127.0.0.1:7822") == LOCAL


def test_unknown_collection_is_a_clear_error():
    with pytest.raises(UnsupportedCollectionError, match="landsat-c2-l2.*known"):
        profile_for(ES, "landsat-c2-l2")


@pytest.mark.parametrize("url", [PC, ES])
def test_grd_is_refused_with_a_clear_message(url):
    prof = profile_for(url, "sentinel-1-grd")
    with pytest.raises(UnsupportedCollectionError, match="radar geometry.*sentinel-1-rtc"):
        profiles.require_geocoded(prof)


@requires_stac
@pytest.mark.parametrize(
    "name", ["pc_sentinel-1-grd_S1A_IW_GRDH", "es_sentinel-1-grd_S1A_IW_GRDH_1SSH_20250731T135637"]
)
def test_real_grd_items_never_reach_the_loader(name):
    """ES GRD items even carry proj:epsg 4326 (a GCP fit): refusal must not depend on proj."""
    item = _one(name)
    url = PC if name.startswith("pc") else ES
    with pytest.raises(UnsupportedCollectionError):
        prepare_items([item], profile_for(url, item["collection"]), ("vv",))


def test_nine_element_transform():
    t = [10.0, 0.0, 388450.0, 0.0, -10.0, 3591080.0, 0.0, 0.0, 1.0]
    a = affine_from_proj(t)
    assert (a.a, a.c, a.e, a.f) == (10.0, 388450.0, -10.0, 3591080.0)
    with pytest.raises(CatalogError, match="not affine"):
        affine_from_proj(t[:8] + [2.0])
    with pytest.raises(CatalogError, match="6 or 9"):
        affine_from_proj(t[:5])


@requires_stac
def test_pc_rtc_item_grid_and_assets():
    item = _one("pc_sentinel-1-rtc_S1A_IW_GRDH_1SDV_20240419T045839")
    assert len(item["properties"]["proj:transform"]) == 9
    prof = profile_for(PC, item["collection"])
    epsg, tr, shape = asset_grid(item, "vv")
    assert epsg == 32633 and shape == (21268, 29015)
    # the footprint in map units matches the recorded proj:bbox
    assert (tr.c, tr.f + tr.e * shape[0], tr.c + tr.a * shape[1], tr.f) == tuple(
        item["properties"]["proj:bbox"]
    )
    assert profiles.nodata(prof, item, "vv") == -32768
    ready = rekey_assets(item, prof, ("vv", "vh"))
    assert list(ready["assets"]) == ["vv", "vh"]
    assert len(ready["properties"]["proj:transform"]) == 6
    assert ready["assets"]["vv"]["href"].startswith("https://sentinel1euwestrtc.blob.core")
    assert "?" not in ready["assets"]["vv"]["href"]  # recorded unsigned: signing is ours


@requires_stac
@pytest.mark.parametrize(
    "name,baseline,expect",
    [
        ("pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T59VPE", "02.12", 0.15),
        ("pc_sentinel-2-l2a_S2B_MSIL2A_20240419T095549_R122_T47XMJ", "05.10", 0.05),
        ("es_sentinel-2-c1-l2a_S2B_T24MUV", "05.11", 0.05),
        ("es_sentinel-2-l2a_S2A_13TDE", "05.09", 0.05),
    ],
)
def test_s2_reflectance_of_dn_1500(name, baseline, expect):
    """DN 1500 is 0.15 before baseline 04.00 and 0.05 after (PC: derived, ES: raster:bands)."""
    item = _one(name)
    assert item["properties"]["s2:processing_baseline"] == baseline
    url = PC if name.startswith("pc") else ES
    prof = profile_for(url, item["collection"])
    for band in ("B02", "B04", "B08"):
        scale, offset = scale_offset(prof, item, band)
        assert 1500 * scale + offset == pytest.approx(expect, abs=1e-9)


@requires_stac
def test_es_common_names_map_to_band_ids_with_their_own_grids():
    item = _one("es_sentinel-2-c1-l2a_S2B_T24MVV")
    prof = profile_for(ES, "sentinel-2-c1-l2a")
    ready = rekey_assets(item, prof, ("B04", "B08", "SCL"))
    # c1 asset keys are common names, but the files are named by band id
    assert ready["assets"]["B04"]["href"] == item["assets"]["red"]["href"]
    assert ready["assets"]["B04"]["href"].endswith("/B04.tif")
    assert ready["assets"]["B08"]["href"].endswith("/B08.tif")
    assert ready["assets"]["SCL"]["href"].endswith("/SCL.tif")
    assert asset_grid(ready, "B04")[2] == (10980, 10980)
    epsg, tr, shape = asset_grid(ready, "SCL")  # 20 m asset on its own grid
    assert (epsg, tr.a, shape) == (32724, 20.0, (5490, 5490))
    with pytest.raises(CatalogError, match="no band 'B10'"):
        rekey_assets(item, prof, ("B10",))


@requires_stac
def test_pc_s2_missing_asset_is_named():
    item = _one("pc_sentinel-2-l2a_S2B_MSIL2A_20250312T014549")
    prof = profile_for(PC, "sentinel-2-l2a")
    del item["assets"]["B03"]
    with pytest.raises(CatalogError, match="no asset 'B03' for band B03"):
        rekey_assets(item, prof, ("B02", "B03"))


@requires_stac
def test_proj_code_is_normalised_on_items_and_assets():
    """No recorded item uses proj:code yet: rewrite a real ES item the STAC 1.1 way."""
    item = _one("es_sentinel-2-c1-l2a_S2B_T24MUV")
    epsg = item["properties"].pop("proj:epsg")
    item["properties"]["proj:code"] = f"EPSG:{epsg}"
    item["assets"]["red"]["proj:code"] = "EPSG:32724"
    out = normalise_item(item)
    assert out["properties"]["proj:epsg"] == 32724 == out["assets"]["red"]["proj:epsg"]
    assert asset_grid(out, "red")[0] == 32724


@requires_stac
@pytest.mark.parametrize(
    "name,url,href_start,has_rb",
    [
        (
            "pc_cop-dem-glo-30_Copernicus",
            PC,
            "https://elevationeuwest.blob.core.windows.net",
            False,
        ),
        ("es_cop-dem-glo-30_Copernicus", ES, "s3://copernicus-dem-30m/", True),
    ],
)
def test_dem_profiles(name, url, href_start, has_rb):
    item = _one(name)
    prof = profile_for(url, "cop-dem-glo-30")
    ready = rekey_assets(item, prof, ("dem",))
    assert ready["assets"]["dem"]["href"].startswith(href_start)
    assert ("raster:bands" in ready["assets"]["dem"]) == has_rb
    assert scale_offset(prof, item, "dem") == (1.0, 0.0)
    assert asset_grid(ready, "dem")[:1] == (4326,)


@requires_stac
def test_pc_signing_is_lazy_and_per_href(monkeypatch):
    calls = []
    fake = types.ModuleType("planetary_computer")
    fake.sign = lambda href: calls.append(href) or href + "?sig=x"
    monkeypatch.setitem(sys.modules, "planetary_computer", fake)
    item = _one("pc_sentinel-1-rtc_S1A_IW_GRDH_1SDV_20250311T044231")
    prof = profile_for(PC, "sentinel-1-rtc")
    ready = rekey_assets(item, prof, ("vv", "vh"))
    assert calls == []  # re-keying does not sign: that happens in the worker
    signed = sign_item(ready, prof)
    assert [a["href"].endswith("?sig=x") for a in signed["assets"].values()] == [True, True]
    assert "?" not in ready["assets"]["vv"]["href"]  # the input is not modified
    assert len(calls) == 2
    # Earth Search and local catalogs are not signed at all
    es = profile_for(ES, "cop-dem-glo-30")
    assert sign_item(ready, es) is ready


def test_pc_signing_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # import fails
    prof = profile_for(PC, "sentinel-1-rtc")
    with pytest.raises(CatalogError, match="pip install planetary-computer"):
        sign_item({"assets": {"vv": {"href": "https://x.blob.core.windows.net/a.tif"}}}, prof)


def test_every_profile_row_is_consistent():
    for (provider, coll), p in profiles.PROFILES.items():
        assert (p.provider, p.collection) == (provider, coll)
        assert p.kind in (profiles.S1_RTC, profiles.S1_GRD, profiles.S2_L2A, profiles.DEM)
        assert p.geocoded == (p.kind != profiles.S1_GRD)
        assert len(set(p.assets.values())) == len(p.assets)
    assert np.isclose(profiles.S2_SCALE * profiles.S2_OFFSET_DN, -0.1)
