"""Per-collection catalog profiles: how to read one STAC collection of one provider, as DATA.

Planetary Computer, Earth Search and the local catalog name the same Sentinel bands
differently (``B04`` vs ``red``), scale them differently (``raster:bands`` or none), write
projections differently (``proj:code`` vs ``proj:epsg``, 6- or 9-element transforms) and sign
(or not) their URLs. Each (provider, collection) gets one small ``CollectionProfile`` row in
``PROFILES``; loaders ask the profile instead of testing provider names.

Band names inside sar2opt are canonical: ``vv``/``vh`` for S1, ``B02``… and ``SCL`` for S2,
``dem`` for the elevation model. ``prepare_items`` re-keys every item's assets to them. The
local catalog's S2 items may carry ``CLP`` (cloud probability, BioMassters): a mask that the
cloud test reads where an item has it (``has_band``), never an optical band.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from affine import Affine

from sar2opt.cube.clean import CLP_BAND
from sar2opt.errors import CatalogError

PLANETARY_COMPUTER = "planetary-computer"
EARTH_SEARCH = "earth-search"
LOCAL = "local"

S1_RTC, S1_GRD, S2_L2A, DEM = "s1-rtc", "s1-grd", "s2-l2a", "dem"

# Sentinel-2 L2A processing baseline from which DN carry a +1000 offset (BOA_ADD_OFFSET).
S2_OFFSET_BASELINE = 4.0
S2_OFFSET_DN = -1000.0
S2_SCALE = 1e-4


class UnsupportedCollectionError(CatalogError):
    """A collection sar2opt cannot put on a map grid (GRD) or does not know."""


@dataclass(frozen=True)
class CollectionProfile:
    """How to read one collection: band -> asset key, scaling, nodata, signing, geometry.

    ``scale``/``offset`` apply when an asset has no ``raster:bands`` scale; for ``s2-l2a``
    the offset is ``S2_OFFSET_DN * scale`` from processing baseline 04.00 on.
    ``geocoded`` is False for radar-geometry products (GRD): they are refused.
    """

    provider: str
    collection: str
    kind: str
    band_assets: tuple[tuple[str, str], ...]
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    units: str = ""
    signing: str | None = None
    geocoded: bool = True

    @property
    def assets(self) -> dict[str, str]:
        return dict(self.band_assets)

    def asset_key(self, band: str) -> str:
        try:
            return self.assets[band]
        except KeyError:
            raise CatalogError(
                f"{self.provider} {self.collection} has no band {band!r}; "
                f"known: {sorted(self.assets)}"
            ) from None


def _same(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, n) for n in names)


_S2_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# Earth Search uses common names for the same bands.
_ES_S2 = (
    ("B01", "coastal"),
    ("B02", "blue"),
    ("B03", "green"),
    ("B04", "red"),
    ("B05", "rededge1"),
    ("B06", "rededge2"),
    ("B07", "rededge3"),
    ("B08", "nir"),
    ("B8A", "nir08"),
    ("B09", "nir09"),
    ("B11", "swir16"),
    ("B12", "swir22"),
    ("SCL", "scl"),
    ("AOT", "aot"),
    ("WVP", "wvp"),
)
_PC_S2 = _same(*_S2_NAMES, "SCL", "AOT", "WVP")
_S1 = _same("vv", "vh", "hh", "hv")


def _rows() -> list[CollectionProfile]:
    pc, es, lo = PLANETARY_COMPUTER, EARTH_SEARCH, LOCAL
    s2 = dict(kind=S2_L2A, scale=S2_SCALE, nodata=0, units="reflectance")
    rtc = dict(kind=S1_RTC, nodata=-32768, units="linear gamma0 power")
    grd = dict(kind=S1_GRD, units="DN (radar geometry)", geocoded=False)
    dem = dict(kind=DEM, band_assets=(("dem", "data"),), nodata=-32767, units="m")
    return [
        CollectionProfile(pc, "sentinel-1-rtc", band_assets=_S1, signing=pc, **rtc),
        CollectionProfile(pc, "sentinel-1-grd", band_assets=_S1, signing=pc, **grd),
        CollectionProfile(pc, "sentinel-2-l2a", band_assets=_PC_S2, signing=pc, **s2),
        CollectionProfile(pc, "cop-dem-glo-30", signing=pc, **dem),
        CollectionProfile(es, "sentinel-1-grd", band_assets=_S1, nodata=0, **grd),
        CollectionProfile(es, "sentinel-2-l2a", band_assets=_ES_S2, **s2),
        CollectionProfile(es, "sentinel-2-c1-l2a", band_assets=_ES_S2, **s2),
        CollectionProfile(es, "cop-dem-glo-30", **dem),
        # the local catalog (synthetic scene, MultiEarth ingest) is shaped like PC, unsigned
        CollectionProfile(lo, "sentinel-1-rtc", band_assets=_S1, **rtc),
        CollectionProfile(lo, "sentinel-2-l2a", band_assets=_PC_S2 + _same("QA60", CLP_BAND), **s2),
        CollectionProfile(lo, "cop-dem-glo-30", **dem),
    ]


PROFILES: dict[tuple[str, str], CollectionProfile] = {
    (p.provider, p.collection): p for p in _rows()
}

# host substring -> provider
_HOSTS = {"planetarycomputer.microsoft.com": PLANETARY_COMPUTER, "earth-search": EARTH_SEARCH}


def provider_for_url(stac_url: str) -> str:
    """Which provider a STAC API URL belongs to; anything unknown reads as the local catalog."""
    host = urlparse(stac_url).netloc.lower()
    for needle, provider in _HOSTS.items():
        if needle in host:
            return provider
    return LOCAL


def profile_for(stac_url: str, collection: str) -> CollectionProfile:
    """The profile of ``collection`` at ``stac_url``; a clear error when sar2opt cannot read it."""
    provider = provider_for_url(stac_url)
    try:
        return PROFILES[(provider, collection)]
    except KeyError:
        known = sorted(c for p, c in PROFILES if p == provider)
        raise UnsupportedCollectionError(
            f"collection {collection!r} has no profile for {provider} ({stac_url}); known: {known}"
        ) from None


def require_geocoded(profile: CollectionProfile) -> None:
    """Refuse radar-geometry products: loading them onto a map grid would misplace every pixel."""
    if not profile.geocoded:
        raise UnsupportedCollectionError(
            f"{profile.provider} {profile.collection} is in radar geometry (no map projection); "
            "use a terrain-corrected collection such as Planetary Computer's sentinel-1-rtc"
        )


# ---------------------------------------------------------------------------------------------
# item-level rules (pure functions on the API's JSON dicts)


def epsg_from_code(d: dict) -> None:
    """Set ``proj:epsg`` (read by stackstac) from STAC 1.1 ``proj:code`` ("EPSG:32721")."""
    code = d.get("proj:code")
    if d.get("proj:epsg") is None and isinstance(code, str) and code.upper().startswith("EPSG:"):
        d["proj:epsg"] = int(code.split(":", 1)[1])


def affine_from_proj(transform: Sequence[float]) -> Affine:
    """``proj:transform`` (6 or 9 elements: PC writes the full 3x3 matrix) as an Affine."""
    t = [float(v) for v in transform]
    if len(t) == 9:
        if t[6:] != [0.0, 0.0, 1.0]:
            raise CatalogError(f"proj:transform {t} is not affine (last row must be 0, 0, 1)")
    elif len(t) != 6:
        raise CatalogError(f"proj:transform must have 6 or 9 elements, got {len(t)}")
    return Affine(*t[:6])


def normalise_item(item: dict) -> dict:
    """Integer ``proj:epsg`` on the item and its assets; 6-element ``proj:transform`` (in place)."""
    props = item.setdefault("properties", {})
    targets = [props] + [a for a in item.get("assets", {}).values() if isinstance(a, dict)]
    for d in targets:
        epsg_from_code(d)
        if "proj:transform" in d and d["proj:transform"] is not None:
            d["proj:transform"] = list(affine_from_proj(d["proj:transform"]))[:6]
    return item


def asset_grid(item: dict, asset_key: str) -> tuple[int, Affine, tuple[int, int]]:
    """(EPSG, transform, (height, width)) of one asset: asset fields first, then the item's."""
    props = dict(item.get("properties", {}))
    asset = dict(item["assets"][asset_key])
    epsg_from_code(props)
    epsg_from_code(asset)
    epsg = asset.get("proj:epsg", props.get("proj:epsg"))
    tr = asset.get("proj:transform", props.get("proj:transform"))
    shape = asset.get("proj:shape", props.get("proj:shape"))
    if epsg is None or tr is None or shape is None:
        raise CatalogError(f"item {item.get('id')} asset {asset_key!r} has no projection fields")
    return int(epsg), affine_from_proj(tr), (int(shape[0]), int(shape[1]))


def processing_baseline(item: dict) -> float | None:
    """``s2:processing_baseline`` ("05.10") as a number, None when absent or unreadable."""
    raw = item.get("properties", {}).get("s2:processing_baseline")
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def scale_offset(profile: CollectionProfile, item: dict, band: str) -> tuple[float, float]:
    """(scale, offset) with value = DN * scale + offset for ``band`` of ``item``.

    ``raster:bands`` scale/offset win where the catalog gives them (Earth Search, local);
    otherwise the profile's rule: for S2 L2A the -1000 DN offset from baseline 04.00 on
    (Planetary Computer gives no ``raster:bands``).
    """
    asset = item.get("assets", {}).get(profile.asset_key(band), {})
    rb = (asset.get("raster:bands") or [{}])[0]
    if "scale" in rb:
        return float(rb["scale"]), float(rb.get("offset", 0.0))
    if profile.kind == S2_L2A:
        base = processing_baseline(item)
        offset_dn = S2_OFFSET_DN if base is not None and base >= S2_OFFSET_BASELINE else 0.0
        return profile.scale, profile.scale * offset_dn
    return profile.scale, profile.offset


def nodata(profile: CollectionProfile, item: dict, band: str) -> float | None:
    """No-data value of ``band``: the asset's ``raster:bands`` nodata, else the profile's."""
    asset = item.get("assets", {}).get(profile.asset_key(band), {})
    rb = (asset.get("raster:bands") or [{}])[0]
    return rb.get("nodata", profile.nodata)


def rekey_assets(item: dict, profile: CollectionProfile, bands: Sequence[str]) -> dict:
    """A normalised copy of ``item`` whose assets are keyed by canonical band names.

    Only the requested bands are kept, so stackstac reads exactly those.
    """
    assets = item.get("assets", {})
    out = copy.deepcopy({k: v for k, v in item.items() if k != "assets"})
    new_assets = {}
    for band in bands:
        key = profile.asset_key(band)
        if key not in assets:
            raise CatalogError(
                f"item {item.get('id')} ({profile.collection}) has no asset {key!r} for band {band}"
            )
        new_assets[band] = copy.deepcopy(assets[key])
    out["assets"] = new_assets
    return normalise_item(out)


def sign_item(item: dict, profile: CollectionProfile) -> dict:
    """Signed copy of ``item`` for providers that need it (Planetary Computer SAS tokens).

    Called inside the worker that reads the pixels, right before reading: tokens expire
    (about an hour), so signing at search time fails on long runs. ``planetary-computer`` is an
    optional dependency, imported only here.
    """
    if profile.signing is None:
        return item
    if profile.signing == PLANETARY_COMPUTER:
        try:
            import planetary_computer
        except ImportError:
            raise CatalogError(
                "reading Planetary Computer data needs the 'planetary-computer' package "
                "(pip install planetary-computer)"
            ) from None
        out = copy.deepcopy(item)
        for asset in out.get("assets", {}).values():
            asset["href"] = planetary_computer.sign(asset["href"])  # sign(str) -> signed URL
        return out
    raise CatalogError(f"unknown signing scheme {profile.signing!r}")


def has_band(item: dict, profile: CollectionProfile, band: str) -> bool:
    """Whether ``item`` carries ``band`` under ``profile`` (an optional asset such as ``CLP``)."""
    key = profile.assets.get(band)
    return key is not None and key in item.get("assets", {})


def prepare_items(
    items: Sequence[dict], profile: CollectionProfile, bands: Sequence[str]
) -> list[dict]:
    """Items ready for stackstac: geocoded, assets keyed by band, normalised, signed."""
    require_geocoded(profile)
    return [sign_item(rekey_assets(it, profile, bands), profile) for it in items]


def band_scaling(
    items: Sequence[dict], profile: CollectionProfile, bands: Sequence[str]
) -> tuple[list[list[float]], list[list[float]]]:
    """Per item and band (scale, offset) tables, for vectorised rescaling of a stack."""
    scales = [[scale_offset(profile, it, b)[0] for b in bands] for it in items]
    offsets = [[scale_offset(profile, it, b)[1] for b in bands] for it in items]
    return scales, offsets


def profiles_table() -> list[Mapping[str, object]]:
    """Rows for docs: provider, collection, kind, bands -> assets, signing."""
    return [
        {
            "provider": p.provider,
            "collection": p.collection,
            "kind": p.kind,
            "assets": p.assets,
            "signing": p.signing,
            "geocoded": p.geocoded,
        }
        for p in PROFILES.values()
    ]
