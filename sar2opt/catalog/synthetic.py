"""A synthetic Earth: Sentinel-1, Sentinel-2 and DEM scenes at any extent, as COGs + STAC items.

Why synthetic: the pipeline must run end to end without internet, at any scale, with a known
cloud-free truth, and a model trained on it must have something real to learn. So the scene is
one land-cover history plus a few smooth physical fields (biomass, pasture vigour, soil
moisture, canopy texture) that drive BOTH the radar backscatter and the optical reflectance;
only speckle, sensor noise and clouds are independent.

Every value is a pure function of (seed, map position, date) on a global pixel lattice
(``noise``), so the same place and date give the same pixel whatever extent was requested,
and scenes are generated tile by tile (``tile_px``) without ever holding a whole band.

* Terrain (``terrain``): fractal hills over carved valleys, rivers at the valley bottoms, lakes;
  ``TerrainSpec.relief_m`` is the slope setting (flat lowland by default).
* Land cover (1 forest, 2 pasture, 3 bare soil, 4 water, 5 urban): N-S highways every 9 km
  with old pasture along them, fishbone side roads every ~2 km whose roads advance and whose
  lots are cleared front by front over 2-7 dry seasons (June-September), fresh clearings are
  bare soil and become pasture after 240 days; towns at some crossings; a riparian reserve keeps
  100 m of forest along rivers. Deforestation only grows.
* Sentinel-1 (``radar``): gamma0 per class modulated by the local incidence angle of the DEM
  for the orbit direction, noise floor in radar shadow, brightening in layover, gamma speckle
  (ENL 4.4); ``layover``/``shadow`` uint8 mask assets. Linear power in ``vv``/``vh``.
* Sentinel-2 (``clouds``): per-class reflectance with a seasonal cycle and sensor noise, clouds
  with shadows displaced toward the sun, an honest ``SCL``, ``QA60`` all zeros (unreliable, as
  in the real archive) unless asked otherwise, and ``truth_<band>``: the same bands without
  clouds and shadows (equal to the image wherever SCL shows ground).
* DEM: ``cop-dem-glo-30`` item with one ``data`` asset (float32 m) on the same grid.

Dates sit on fixed revisit lattices (S1 every 12 days through 2023-07-01, S2 every 5 days
through 2023-07-03), so a date is the same acquisition whatever period is asked for.
Besides the catalog (``items.parquet``/``items.json``, COGs in ``cogs/``) the generator writes
``truth/{item_id}_landcover.tif`` (uint8 classes) for every S1 and S2 item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import rasterio
from shapely.geometry import box

from sar2opt.catalog import clouds, noise, radar
from sar2opt.catalog.items import (
    S1_NODATA,
    TRUTH_PREFIX,
    dem_item,
    s1_item,
    s2_item,
    write_catalog,
)
from sar2opt.catalog.radar import BARE, FOREST, PASTURE, URBAN, WATER
from sar2opt.catalog.terrain import TerrainSpec, terrain
from sar2opt.catalog.tiled import GDAL_CACHE_MB, TiledCog
from sar2opt.errors import Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.zones import ZonePart, central_lon, split_zones

CLASS_NAMES = {FOREST: "forest", PASTURE: "pasture", BARE: "bare", WATER: "water", URBAN: "urban"}
SIGMA0_DB = radar.SIGMA0_DB
ENL = radar.ENL
S2_BAND_NAMES = ("B02", "B03", "B04", "B08")
# Surface reflectance per class (Amazon literature / Sentinel-2 spectral libraries).
REFLECTANCE: dict[str, dict[int, float]] = {
    #         forest pasture bare  water  urban
    "B01": dict(zip((1, 2, 3, 4, 5), (0.03, 0.06, 0.09, 0.04, 0.08), strict=True)),
    "B02": dict(zip((1, 2, 3, 4, 5), (0.02, 0.05, 0.09, 0.03, 0.07), strict=True)),
    "B03": dict(zip((1, 2, 3, 4, 5), (0.04, 0.08, 0.12, 0.04, 0.085), strict=True)),
    "B04": dict(zip((1, 2, 3, 4, 5), (0.025, 0.07, 0.15, 0.03, 0.105), strict=True)),
    "B05": dict(zip((1, 2, 3, 4, 5), (0.06, 0.10, 0.17, 0.025, 0.12), strict=True)),
    "B06": dict(zip((1, 2, 3, 4, 5), (0.20, 0.20, 0.19, 0.02, 0.14), strict=True)),
    "B07": dict(zip((1, 2, 3, 4, 5), (0.27, 0.25, 0.21, 0.02, 0.16), strict=True)),
    "B08": dict(zip((1, 2, 3, 4, 5), (0.30, 0.28, 0.22, 0.02, 0.17), strict=True)),
    "B8A": dict(zip((1, 2, 3, 4, 5), (0.31, 0.29, 0.23, 0.02, 0.18), strict=True)),
    "B11": dict(zip((1, 2, 3, 4, 5), (0.14, 0.24, 0.30, 0.01, 0.22), strict=True)),
    "B12": dict(zip((1, 2, 3, 4, 5), (0.06, 0.14, 0.24, 0.008, 0.19), strict=True)),
}
NIR_LIKE = ("B06", "B07", "B08", "B8A")
SCL_OF_CLASS = {FOREST: 4, PASTURE: 4, BARE: 5, WATER: 6, URBAN: 5}
SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH = (
    clouds.SCL_SHADOW,
    clouds.SCL_CLOUD_MED,
    clouds.SCL_CLOUD_HIGH,
)
# Cloud cover (fraction) cycled over the S2 revisit lattice: clear, cloudy and in-between dates.
CLOUD_COVER_CYCLE = (0.02, 0.55, 0.0, 0.30, 0.85, 0.10, 0.45, 0.05)

EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)  # day 0 of the land-cover history
S1_ANCHOR = date(2023, 7, 1)  # a descending acquisition; the lattice runs both ways
S2_ANCHOR = date(2023, 7, 3)  # a Sentinel-2B acquisition
ASCENDING_OFFSET_DAYS = 5
FRESH_CLEARING_DAYS = 240  # slash and bare soil before pasture establishes
DRY_SEASON_DAYS = 100.0  # clearing season length (June-September in Para)
SUN_BLOCK_M = 65536.0  # sun angles are one value per date per 65.536 km band of northing

# Land-use geometry (metres).
HIGHWAY_SPACING_M = 9000.0
SIDE_ROAD_SPACING_M = 2000.0
LOT_M = 300.0

# Stream ids of the world hash, one per field.
_F = {
    name: 200 + i
    for i, name in enumerate(
        (
            "wiggle",
            "hwy",
            "side",
            "lot",
            "edge",
            "wobble",
            "patches",
            "old_bare",
            "biomass",
            "vigour",
            "moisture",
            "texture",
            "sediment",
            "town",
            "s1",
            "s2",
            "speckle_vv",
            "speckle_vh",
            "moist_t",
            "wind",
            "cloud",
            "noise",
            "date",
        )
    )
}


@dataclass(frozen=True)
class SynthSpec:
    """What to generate (besides where and when)."""

    seed: int = 0
    res_m: float = 10.0
    terrain: TerrainSpec = field(default_factory=TerrainSpec)
    orbit_states: tuple[str, ...] = ("descending",)
    s1_revisit_days: int = 12
    s2_revisit_days: int = 5
    s2_bands: tuple[str, ...] = S2_BAND_NAMES
    qa60_reliable: bool = False  # False: QA60 all zeros, as in the real archive after 2022
    tile_px: int = 1024
    max_open_files: int = 240  # dates are processed in batches so that few files are open

    def __post_init__(self) -> None:
        bad = [b for b in self.s2_bands if b not in REFLECTANCE]
        if bad:
            raise Sar2OptError(f"unknown Sentinel-2 band(s) {bad}; choose from {list(REFLECTANCE)}")
        bad = [o for o in self.orbit_states if o not in radar.ORBITS]
        if bad or not self.orbit_states:
            raise Sar2OptError(f"orbit states must be among {list(radar.ORBITS)}, got {bad}")
        if self.res_m <= 0 or self.tile_px < 16:
            raise Sar2OptError(f"res_m must be > 0 and tile_px >= 16, got {self}")
        if self.s1_revisit_days not in (6, 12):
            raise Sar2OptError("s1_revisit_days must be 6 or 12 (Sentinel-1 repeat cycle)")


# --------------------------------------------------------------------------- dates


@dataclass(frozen=True)
class S1Date:
    when: datetime
    orbit_state: str
    n: int  # index on the revisit lattice


@dataclass(frozen=True)
class S2Date:
    when: datetime
    n: int


def _utc(d: date, hours: float) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(hours=hours)


def _round_hours(h: float, step_min: int) -> float:
    return round(h * 60.0 / step_min) * step_min / 60.0


def s1_dates(
    first: date, last: date | None, *, epsg: int, spec: SynthSpec, count: int | None = None
) -> list[S1Date]:
    """Sentinel-1 acquisitions on the revisit lattice between ``first`` and ``last`` (or the
    first ``count`` of them). Descending passes at ~05:30 local solar time, ascending ~17:30."""
    lon = central_lon(epsg)
    out: list[S1Date] = []
    for orbit in spec.orbit_states:
        anchor = S1_ANCHOR + timedelta(days=ASCENDING_OFFSET_DAYS if orbit == "ascending" else 0)
        hours = _round_hours((5.5 if orbit == "descending" else 17.5) - lon / 15.0, 15) % 24
        step = spec.s1_revisit_days
        n = math.ceil((first - anchor).days / step)
        k = 0
        while True:
            d = anchor + timedelta(days=step * n)
            if (last is not None and d > last) or (count is not None and k >= count):
                break
            out.append(S1Date(_utc(d, hours), orbit, n))
            n += 1
            k += 1
    return sorted(out, key=lambda s: s.when)


def s2_dates(
    first: date, last: date | None, *, epsg: int, spec: SynthSpec, count: int | None = None
) -> list[S2Date]:
    """Sentinel-2 acquisitions every ``s2_revisit_days`` at ~10:30 local solar time."""
    hours = _round_hours(10.5 - central_lon(epsg) / 15.0, 60) % 24
    step = spec.s2_revisit_days
    n = math.ceil((first - S2_ANCHOR).days / step)
    out: list[S2Date] = []
    while True:
        d = S2_ANCHOR + timedelta(days=step * n)
        if (last is not None and d > last) or (count is not None and len(out) >= count):
            break
        out.append(S2Date(_utc(d, hours), n))
        n += 1
    return out


def _days(when: datetime) -> float:
    return (when - EPOCH).total_seconds() / 86400.0


# --------------------------------------------------------------------------- land cover


@dataclass
class Layout:
    """Static land layers of one tile (arrays (y, x)); days count from ``EPOCH``."""

    clearing_day: np.ndarray  # float32 day a pixel stops being forest; +inf never, -inf always
    road_day: np.ndarray  # float32 day a road reaches the pixel
    water: np.ndarray  # bool
    urban: np.ndarray  # bool
    old_bare: np.ndarray  # bool: degraded bare patches inside old pasture
    biomass: np.ndarray  # unit-std fields shared by radar and optics
    vigour: np.ndarray
    moisture: np.ndarray
    texture: np.ndarray
    sediment: np.ndarray


def _field(xs, ys, seed, name, outer_m, inner_m, gain=0.5):
    return noise.fbm(
        xs, ys, noise.stream_key(seed, _F[name]), outer_m=outer_m, inner_m=inner_m, gain=gain
    )


def land_layout(
    xs: np.ndarray, ys: np.ndarray, seed: int, river_dist_m: np.ndarray, water: np.ndarray
) -> Layout:
    """Roads, clearings and towns at pixel centres ``xs`` × ``ys`` (a pure function of place)."""
    X = xs[None, :]
    Y = ys[:, None]
    # N-S highways: x = k*S + offset_k + wiggle(y).
    wig = 150.0 * noise.value_noise(np.zeros(1), ys, 8000.0, noise.stream_key(seed, _F["wiggle"]))
    kh = np.floor((X - wig) / HIGHWAY_SPACING_M + 0.5).astype(np.int64)
    key_h = noise.stream_key(seed, _F["hwy"])
    k_ids = np.arange(int(kh.min()), int(kh.max()) + 1)  # few highways: draw per id, then index
    off_k = ((noise.uniform_at(key_h, k_ids, 0) - 0.5) * 0.3 * HIGHWAY_SPACING_M)[kh - k_ids[0]]
    along = X - (kh * HIGHWAY_SPACING_M + off_k + wig)
    a = np.abs(along)
    side = (along > 0).astype(np.int64)
    # Side roads E-W every ~2 km, per highway phase, jittered.
    phase = noise.uniform_at(key_h, k_ids, 1)[kh - k_ids[0]]
    jr = np.floor(Y / SIDE_ROAD_SPACING_M + phase).astype(np.int64)
    hs = noise.hash_at(noise.stream_key(seed, _F["side"]), kh, jr)
    y_road = (jr - phase + 0.5 + (noise.draw(hs, 0) - 0.5) * 0.3) * SIDE_ROAD_SPACING_M
    d = np.abs(Y - y_road)
    north = (Y > y_road).astype(np.int64)
    hss = noise.hash_at(noise.stream_key(seed, _F["side"]), kh, jr, side)
    length = (0.30 + 0.25 * noise.draw(hss, 1)) * HIGHWAY_SPACING_M
    t_road = -2500.0 + 3300.0 * noise.draw(hss, 2)
    speed = 2.0 + 10.0 * noise.draw(hss, 3)  # m/day the road tip advances
    road_day = np.full(a.shape, np.inf)
    on_road = (d <= 7.5) & (a <= length) & (a > 10.0)
    road_day = np.where(on_road, t_road + a / speed, road_day)
    road_day = np.where(a <= 10.0, -np.inf, road_day)  # the highway (and its bridges)

    # Lots along side roads, cleared in the dry season of some year after the road arrives.
    lot = np.floor(a / LOT_M).astype(np.int64)
    hl = noise.hash_at(noise.stream_key(seed, _F["lot"]), hss, north, lot)

    def u(tag: int) -> np.ndarray:
        return noise.draw(hl, tag)

    active = u(0) < 0.75
    reach = t_road + lot * LOT_M / speed
    first_year = np.floor((reach + 60.0 + 700.0 * u(1)) / 365.25)
    n_years = 2.0 + np.floor(6.0 * u(2))  # dry seasons the clearing takes
    depth = (250.0 + 850.0 * u(3)) * np.clip(1.0 - a / length, 0.0, 1.0) ** 0.7
    wobble = 40.0 * _field(xs, ys, seed, "wobble", 160.0, 80.0)
    dd = np.maximum(d - wobble, 0.0)
    # Each dry season (day-of-year ~160..270) the front advances depth / n_years.
    stage = dd / np.maximum(depth / n_years, 1.0)
    season = np.floor(stage)
    opens = 160.0 + 20.0 * u(4)
    lot_day = (first_year + season) * 365.25 + opens + (stage - season) * DRY_SEASON_DAYS
    lot_day = np.where(active & (a <= length) & (dd < depth), np.maximum(lot_day, reach), np.inf)
    clearing = lot_day
    # Old pasture along the highway, 450-750 m each side, and scattered old patches.
    edge = _field(xs, ys, seed, "edge", 800.0, 200.0)
    clearing = np.where(a < 600.0 + 150.0 * edge, -np.inf, clearing)
    patches = _field(xs, ys, seed, "patches", 500.0, 125.0)
    clearing = np.where(patches > 1.65, -np.inf, clearing)
    clearing = np.where(river_dist_m < 100.0, np.inf, clearing)  # riparian reserve
    # Towns at some highway/side-road crossings.
    ht = noise.hash_at(noise.stream_key(seed, _F["town"]), kh, jr)
    has_town = noise.draw(ht, 0) < 0.2
    radius = 250.0 + 600.0 * noise.draw(ht, 1)
    urban = has_town & (np.hypot(along, Y - y_road) < radius * (1.0 + 0.25 * edge)) & ~water
    road_day = np.where(water & (a > 10.0), np.inf, road_day)
    return Layout(
        clearing_day=clearing.astype(np.float32),
        road_day=road_day.astype(np.float32),
        water=water,
        urban=urban,
        old_bare=_field(xs, ys, seed, "old_bare", 120.0, 30.0) > 1.6,
        biomass=_field(xs, ys, seed, "biomass", 600.0, 75.0),
        vigour=_field(xs, ys, seed, "vigour", 300.0, 40.0),
        moisture=_field(xs, ys, seed, "moisture", 800.0, 100.0),
        texture=_field(xs, ys, seed, "texture", 30.0, 15.0),
        sediment=_field(xs, ys, seed, "sediment", 1000.0, 250.0),
    )


def landcover(layout: Layout, day: float) -> np.ndarray:
    """Class map (uint8) on ``day`` (days since ``EPOCH``): deforestation only grows."""
    lc = np.full(layout.water.shape, FOREST, np.uint8)
    age = np.float32(day) - layout.clearing_day
    cleared = age >= 0
    lc[cleared & (age > FRESH_CLEARING_DAYS) & ~layout.old_bare] = PASTURE
    lc[cleared & ((age <= FRESH_CLEARING_DAYS) | layout.old_bare)] = BARE
    lc[layout.road_day <= day] = BARE
    lc[layout.urban] = URBAN
    lc[layout.water] = WATER
    return lc


def _season(when: datetime) -> float:
    """+1 at the peak of the wet season (early March), -1 at the end of the dry season."""
    doy = when.timetuple().tm_yday
    return math.cos(2.0 * math.pi * (doy - 60) / 365.25)


# --------------------------------------------------------------------------- per-tile physics


@dataclass
class StaticTile:
    """Everything about a tile that does not change with the date."""

    xs: np.ndarray
    ys: np.ndarray
    gx: np.ndarray  # global pixel indices (columns, rows)
    gy: np.ndarray
    dem_m: np.ndarray
    layout: Layout
    geometry: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # orbit -> cos, shadow, layover


def static_tile(grid: GridSpec, row: int, col: int, h: int, w: int, spec: SynthSpec) -> StaticTile:
    """DEM, radar geometry and land layout of the (row, col, h, w) window of ``grid``."""
    res = spec.res_m
    gx = noise.pixel_indices(grid.bounds[0], grid.width, res)[col : col + w]
    gy = noise.pixel_indices(grid.bounds[3], grid.height, res, descending=True)[row : row + h]
    halo = max(
        radar.geometry_halo_px(spec.terrain.z_span_m, res, radar.ORBITS[o][0])
        for o in spec.orbit_states
    )
    gxe = np.arange(gx[0] - halo, gx[-1] + halo + 1, dtype=np.int64)
    gye = np.arange(gy[0] + 1, gy[-1] - 2, -1, dtype=np.int64)  # one row margin each side
    xe, ye = noise.centres(gxe, res), noise.centres(gye, res)
    ter = terrain(xe, ye, res, spec.seed, spec.terrain)
    dem_e = ter.dem_m
    inner = (slice(1, -1), slice(halo, halo + w))
    dz_dx = (dem_e[1:-1, 2:] - dem_e[1:-1, :-2]) / np.float32(2 * res)
    dz_dy = (dem_e[:-2, 1:-1] - dem_e[2:, 1:-1]) / np.float32(2 * res)
    dz_dx = dz_dx[:, halo - 1 : halo - 1 + w]
    dz_dy = dz_dy[:, halo - 1 : halo - 1 + w]
    geometry = {}
    for orbit in spec.orbit_states:
        inc, east = radar.ORBITS[orbit]
        cos_loc = radar.cos_local_incidence(dz_dx, dz_dy, inc, east)
        shadow, layover = radar.shadow_layover(dem_e[1:-1], res, inc, east)
        geometry[orbit] = (cos_loc, shadow[:, halo : halo + w], layover[:, halo : halo + w])
    xs, ys = noise.centres(gx, res), noise.centres(gy, res)
    layout = land_layout(xs, ys, spec.seed, ter.river_dist_m[inner], ter.water[inner])
    return StaticTile(xs, ys, gx, gy, dem_e[inner].copy(), layout, geometry)


def _date_key(seed: int, name: str, when: datetime) -> np.uint64:
    return noise.stream_key(seed, _F[name], when.toordinal(), when.hour)


def sar_tile(st: StaticTile, when: datetime, orbit: str, spec: SynthSpec) -> tuple[np.ndarray, ...]:
    """(vv, vh, landcover) linear gamma0 for one acquisition on a static tile."""
    seed, lay = spec.seed, st.layout
    lc = landcover(lay, _days(when))
    m_t = 0.8 * lay.moisture + 0.6 * noise.fbm(
        st.xs, st.ys, _date_key(seed, "moist_t", when), outer_m=800.0, inner_m=200.0
    )
    wind = noise.fbm(st.xs, st.ys, _date_key(seed, "wind", when), outer_m=600.0, inner_m=150.0)
    season = _season(when)
    terms = {
        FOREST: (0.6 * lay.biomass + 0.3 * lay.texture, 0.9 * lay.biomass + 0.3 * lay.texture),
        PASTURE: (lay.vigour + 0.5 * season, 1.3 * lay.vigour + 0.8 * season),
        BARE: (1.2 * m_t, 0.8 * m_t),
        WATER: (1.2 * wind, 0.6 * wind),
        URBAN: (2.0 * lay.texture, 1.5 * lay.texture),
    }
    inc = radar.ORBITS[orbit][0]
    cos_loc, shadow, layover = st.geometry[orbit]
    expo = np.zeros(lc.shape, np.float32)
    vv = np.zeros(lc.shape, np.float32)
    vh = np.zeros(lc.shape, np.float32)
    for cls, (dvv, dvh) in terms.items():
        sel = lc == cls
        vv[sel] = SIGMA0_DB[cls][0] + dvv[sel]
        vh[sel] = SIGMA0_DB[cls][1] + dvh[sel]
        expo[sel] = radar.ANGULAR_EXPONENT[cls]
    gain = radar.angular_gain_db(cos_loc, inc, expo)
    offset = 0.2 * float(noise.uniform_at(_date_key(seed, "date", when), 0) - 0.5)
    out = []
    for pol, db, floor in (
        ("vv", vv, radar.NOISE_FLOOR_DB[0]),
        ("vh", vh, radar.NOISE_FLOOR_DB[1]),
    ):
        db = db + gain + np.float32(offset)
        db = np.where(layover, db + np.float32(radar.LAYOVER_GAIN_DB), db)
        db = np.where(shadow, np.float32(floor), db)
        spk = noise.gamma_speckle(_date_key(seed, f"speckle_{pol}", when), st.gx, st.gy, radar.ENL)
        out.append((radar.from_db(db) * spk).astype(np.float32))
    return out[0], out[1], lc


def surface_reflectance(
    lay: Layout, lc: np.ndarray, bands: Sequence[str], season: float
) -> np.ndarray:
    """(band, y, x) cloud-free reflectance from class, shared fields and the season."""
    b, v, m, tex, sed = lay.biomass, lay.vigour, lay.moisture, lay.texture, lay.sediment
    refl = np.zeros((len(bands),) + lc.shape, np.float32)
    masks = {cls: lc == cls for cls in CLASS_NAMES}
    for i, band in enumerate(bands):
        r = refl[i]
        for cls, sel in masks.items():
            r[sel] = REFLECTANCE[band][cls]
        f, p, s, wt = masks[FOREST], masks[PASTURE], masks[BARE], masks[WATER]
        if band in NIR_LIKE:
            r[f] += 0.03 * b[f] + 0.015 * tex[f] + 0.01 * season
            r[p] += 0.03 * v[p] + 0.04 * season
        else:
            r[f] *= 1.0 - 0.08 * b[f] - 0.04 * tex[f]
        if band == "B04":
            r[p] -= 0.012 * v[p] + 0.015 * season
        if band == "B03":
            r[p] -= 0.005 * v[p]
        if band in ("B11", "B12"):
            r[p] -= 0.03 * season
        r[s] *= 1.0 - 0.12 * m[s]
        if band in ("B03", "B04"):
            r[wt] += (0.005 if band == "B03" else 0.008) * sed[wt]
        r[masks[URBAN]] *= 1.0 + 0.15 * tex[masks[URBAN]]
    return np.clip(refl, 0.001, 1.0)


def cloud_cover_target(seed: int, n: int) -> float:
    """Target cloud fraction of S2 date ``n`` on the revisit lattice."""
    cover = CLOUD_COVER_CYCLE[n % len(CLOUD_COVER_CYCLE)]
    if cover > 0:
        jitter = noise.uniform_at(noise.stream_key(seed, _F["cloud"], 1), n) - 0.5
        cover = float(np.clip(cover + 0.04 * jitter, 0.005, 0.95))
    return cover


def _sun_shift(
    grid_epsg: int, y_block: int, when: datetime, height_m: float
) -> tuple[float, float]:
    from pyproj import Transformer

    y = (y_block + 0.5) * SUN_BLOCK_M
    tr = Transformer.from_crs(f"EPSG:{grid_epsg}", "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(500000.0, y)
    zen, az = clouds.sun_angles(lon, lat, when)
    return clouds.shadow_offset_m(zen, az, height_m)


def optical_tile(
    st: StaticTile, when: datetime, n: int, epsg: int, spec: SynthSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image DN, truth DN, SCL, QA60, landcover) for one S2 date on a static tile."""
    seed, lay, bands = spec.seed, st.layout, spec.s2_bands
    lc = landcover(lay, _days(when))
    clear = surface_reflectance(lay, lc, bands, _season(when))
    dkey = _date_key(seed, "date", when)
    haze = 0.002 + 0.004 * float(noise.uniform_at(dkey, 1))
    for i, band in enumerate(bands):
        if band in ("B01", "B02"):
            clear[i] += np.float32(haze)
        z = noise.normal_grid(noise.rotate_key(_date_key(seed, "noise", when), [i]), st.gx, st.gy)
        sd = np.sqrt((0.02 * clear[i]) ** 2 + np.float32(0.002**2))
        clear[i] = np.clip(clear[i] + sd * z, 0.0001, 1.0)

    cover = cloud_cover_target(seed, n)
    ckey = _date_key(seed, "cloud", when)
    alpha = clouds.opacity(clouds.cloud_field(st.xs, st.ys, ckey), cover)
    shadow = np.zeros_like(alpha)
    if cover > 0:
        height = 1000.0 + 1500.0 * float(noise.uniform_at(dkey, 2))
        blocks = np.floor(st.ys / SUN_BLOCK_M).astype(np.int64)
        for blk in np.unique(blocks):
            rows = blocks == blk
            dx, dy = _sun_shift(epsg, int(blk), when, height)
            f = clouds.cloud_field(st.xs + dx, st.ys[rows] + dy, ckey)
            # Thin cloud edges already cast most of the shade: shadows are sharper than clouds.
            shadow[rows] = np.minimum(np.float32(3.0) * clouds.opacity(f, cover), np.float32(1.0))
    dark = np.float32(0.3 + 0.2 * float(noise.uniform_at(dkey, 3)))
    bright = 0.30 + 0.30 * np.clip(alpha * 1.5, 0.0, 1.0)
    white = {"B01": 1.03, "B02": 1.02, "B03": 1.0, "B04": 0.99}
    top = np.empty_like(clear)
    for i, band in enumerate(bands):
        shaded = clear[i] * (1.0 - shadow * (1.0 - dark))
        top[i] = (1.0 - alpha) * shaded + alpha * bright * np.float32(white.get(band, 1.0))
    ground = np.zeros(lc.shape, np.uint8)
    for cls, code in SCL_OF_CLASS.items():
        ground[lc == cls] = code
    scl = clouds.scl_codes(ground, alpha, shadow)
    qa = clouds.qa60_bits(alpha) if spec.qa60_reliable else np.zeros(lc.shape, np.uint16)
    return _to_dn(top), _to_dn(clear), scl, qa, lc


def _to_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(refl * 10000.0), 1, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- writing


def _windows(grid: GridSpec, tile_px: int):
    for row in range(0, grid.height, tile_px):
        for col in range(0, grid.width, tile_px):
            yield row, col, min(tile_px, grid.height - row), min(tile_px, grid.width - col)


def _s1_id(d: S1Date, suffix: str) -> str:
    return f"S1A_IW_SYNTH_{d.when:%Y%m%dT%H%M%S}{suffix}"


def _s2_platform(n: int) -> str:
    return "Sentinel-2B" if n % 2 == 0 else "Sentinel-2A"


def _s2_id(d: S2Date, suffix: str) -> str:
    return f"S2{_s2_platform(d.n)[-1]}_MSIL2A_SYNTH_{d.when:%Y%m%dT%H%M%S}{suffix}"


def write_zone(
    out_dir: str | Path,
    grid: GridSpec,
    s1: Sequence[S1Date],
    s2: Sequence[S2Date],
    spec: SynthSpec,
    *,
    id_suffix: str = "",
) -> list[dict]:
    """Generate one grid (one UTM zone) tile by tile: DEM, S1 and S2 COGs; return its items."""
    if grid.res_m != spec.res_m:
        raise ValueError(f"grid res {grid.res_m} != spec res {spec.res_m}")
    out_dir = Path(out_dir)
    cogs, truth = out_dir / "cogs", out_dir / "truth"
    common = {"sar2opt:synthetic": True, "sar2opt:seed": spec.seed}
    per_s1 = 3  # vv, vh, landcover
    per_s2 = 2 * len(spec.s2_bands) + 3
    jobs: list[tuple[str, object]] = [("s1", d) for d in s1] + [("s2", d) for d in s2]
    # Batches of dates so that at most ``max_open_files`` files are open at once.
    batches: list[list[tuple[str, object]]] = [[]]
    budget = max(spec.max_open_files - 1 - 2 * len(spec.orbit_states), per_s2)
    used = 0
    for job in jobs:
        cost = per_s1 if job[0] == "s1" else per_s2
        if used + cost > budget and batches[-1]:
            batches.append([])
            used = 0
        batches[-1].append(job)
        used += cost

    dem_id = f"COP-DEM-SYNTH{id_suffix or ''}"
    dem_path = cogs / f"{dem_id}_data.tif"
    masks = {
        o: {k: cogs / f"S1_SYNTH_{o}{id_suffix}_{k}.tif" for k in ("layover", "shadow")}
        for o in spec.orbit_states
    }
    cloud_px: dict[str, int] = {}
    items: list[dict] = []
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for b, batch in enumerate(batches):
            writers: dict[str, TiledCog] = {}
            if b == 0:
                writers["dem"] = TiledCog(dem_path, grid, "float32", -32767.0)
                for o, paths in masks.items():
                    for k, p in paths.items():
                        writers[f"{o}:{k}"] = TiledCog(p, grid, "uint8", None)
            for kind, d in batch:
                if kind == "s1":
                    iid = _s1_id(d, id_suffix)
                    for pol in ("vv", "vh"):
                        writers[f"{iid}:{pol}"] = TiledCog(
                            cogs / f"{iid}_{pol}.tif", grid, "float32", S1_NODATA
                        )
                else:
                    iid = _s2_id(d, id_suffix)
                    cloud_px[iid] = 0
                    for band in spec.s2_bands:
                        writers[f"{iid}:{band}"] = TiledCog(
                            cogs / f"{iid}_{band}.tif", grid, "uint16", 0
                        )
                        name = TRUTH_PREFIX + band
                        writers[f"{iid}:{name}"] = TiledCog(
                            cogs / f"{iid}_{name}.tif", grid, "uint16", 0
                        )
                    writers[f"{iid}:QA60"] = TiledCog(
                        cogs / f"{iid}_QA60.tif", grid, "uint16", None
                    )
                    writers[f"{iid}:SCL"] = TiledCog(cogs / f"{iid}_SCL.tif", grid, "uint8", 0)
                writers[f"{iid}:landcover"] = TiledCog(
                    truth / f"{iid}_landcover.tif", grid, "uint8", 0
                )
            try:
                for row, col, h, w in _windows(grid, spec.tile_px):
                    st = static_tile(grid, row, col, h, w, spec)
                    if b == 0:
                        writers["dem"].write(row, col, st.dem_m)
                        for o, (_, shadow, layover) in st.geometry.items():
                            writers[f"{o}:layover"].write(row, col, layover.astype(np.uint8))
                            writers[f"{o}:shadow"].write(row, col, shadow.astype(np.uint8))
                    for kind, d in batch:
                        if kind == "s1":
                            iid = _s1_id(d, id_suffix)
                            vv, vh, lc = sar_tile(st, d.when, d.orbit_state, spec)
                            writers[f"{iid}:vv"].write(row, col, vv)
                            writers[f"{iid}:vh"].write(row, col, vh)
                        else:
                            iid = _s2_id(d, id_suffix)
                            top, clear, scl, qa, lc = optical_tile(st, d.when, d.n, grid.epsg, spec)
                            for i, band in enumerate(spec.s2_bands):
                                writers[f"{iid}:{band}"].write(row, col, top[i])
                                writers[f"{iid}:{TRUTH_PREFIX}{band}"].write(row, col, clear[i])
                            writers[f"{iid}:SCL"].write(row, col, scl)
                            writers[f"{iid}:QA60"].write(row, col, qa)
                            cloud_px[iid] += int(
                                np.isin(scl, (SCL_CLOUD_MED, SCL_CLOUD_HIGH)).sum()
                            )
                        writers[f"{iid}:landcover"].write(row, col, lc)
            except BaseException:
                for wr in writers.values():
                    wr.abort()
                raise
            for wr in writers.values():
                wr.close()

    items.append(dem_item(dem_id, grid, dem_path, extra_properties=common))
    for d in s1:
        iid = _s1_id(d, id_suffix)
        hrefs = {pol: cogs / f"{iid}_{pol}.tif" for pol in ("vv", "vh")}
        hrefs.update(masks[d.orbit_state])
        inc = radar.ORBITS[d.orbit_state][0]
        items.append(
            s1_item(
                iid,
                d.when,
                grid,
                hrefs,
                platform="SENTINEL-1A",
                orbit_state=d.orbit_state,
                relative_orbit=97 if d.orbit_state == "descending" else 3,
                extra_properties={**common, "sar2opt:incidence_deg": inc},
            )
        )
    n_px = grid.width * grid.height
    for d in s2:
        iid = _s2_id(d, id_suffix)
        hrefs = {}
        for band in spec.s2_bands:
            hrefs[band] = cogs / f"{iid}_{band}.tif"
        for band in spec.s2_bands:
            hrefs[TRUTH_PREFIX + band] = cogs / f"{iid}_{TRUTH_PREFIX}{band}.tif"
        hrefs["QA60"] = cogs / f"{iid}_QA60.tif"
        hrefs["SCL"] = cogs / f"{iid}_SCL.tif"
        items.append(
            s2_item(
                iid,
                d.when,
                grid,
                hrefs,
                cloud_cover=100.0 * cloud_px[iid] / n_px,
                platform=_s2_platform(d.n),
                extra_properties=common,
            )
        )
    return items


# --------------------------------------------------------------------------- entry points


def scene_grid(
    size_km: float = 10.24,
    res_m: float = 10.0,
    centre_lonlat: tuple[float, float] = (-55.0, -5.0),
    epsg: int = 32721,
) -> GridSpec:
    """The scene's grid: ``size_km`` square on the ``res_m`` lattice around the centre."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    cx, cy = tr.transform(*centre_lonlat)
    n = max(16, round(size_km * 1000.0 / res_m))
    xmin = round(cx / res_m) * res_m - (n // 2) * res_m
    ymin = round(cy / res_m) * res_m - (n // 2) * res_m
    return GridSpec(epsg, res_m, (xmin, ymin, xmin + n * res_m, ymin + n * res_m))


def generate_scene(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size_km: float = 10.24,
    res_m: float = 10.0,
    centre_lonlat: tuple[float, float] = (-55.0, -5.0),
    epsg: int = 32721,
    start: str = "2023-07-01",
    n_s1: int = 4,
    n_s2: int = 8,
    spec: SynthSpec | None = None,
) -> list[dict]:
    """Write a square scene's COGs and catalog under ``out_dir``; return the STAC items.

    The first ``n_s1`` S1 and ``n_s2`` S2 acquisitions on or after ``start`` (with the default
    start: S1 2023-07-01, 07-13 ... at 09:15Z; S2 2023-07-03, 07-08 ... at 14:00Z), plus one DEM
    item. ``spec`` overrides everything but seed and res_m.
    """
    spec = spec or SynthSpec()
    spec = _replace(spec, seed=seed, res_m=res_m)
    grid = scene_grid(size_km, res_m, centre_lonlat, epsg)
    first = date.fromisoformat(start)
    items = write_zone(
        out_dir,
        grid,
        s1_dates(first, None, epsg=epsg, spec=spec, count=n_s1),
        s2_dates(first, None, epsg=epsg, spec=spec, count=n_s2),
        spec,
    )
    write_catalog(items, out_dir)
    return items


def _replace(spec: SynthSpec, **kw) -> SynthSpec:
    import dataclasses

    return dataclasses.replace(spec, **kw)


def check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """A lon/lat bbox (W, S, E, N) as floats; a ``Sar2OptError`` when it is not one."""
    west, south, east, north = (float(v) for v in bbox)
    if not (-180 <= west < east <= 180 and -80 <= south < north <= 84):
        raise Sar2OptError(f"bbox must be W S E N in degrees with W < E and S < N, got {bbox}")
    return west, south, east, north


def region_zones(bbox: Sequence[float], res_m: float) -> list[ZonePart]:
    """The zones and grids of a bbox: ``split_zones``, as a cube build or an inference run of
    the same AOI cuts it, so their grids and the generated scenes line up."""
    return split_zones(box(*check_bbox(bbox)), res_m)


def generate_region(
    out_dir: str | Path,
    bbox: Sequence[float],
    start: str,
    end: str,
    spec: SynthSpec | None = None,
) -> list[dict]:
    """``sar2opt synth``: every acquisition between ``start`` and ``end`` over a lon/lat bbox.

    The bbox is split by ``region_zones``: one grid and one item set per zone, ids suffixed
    ``_UTM<zone name>`` (``_UTM21S``); pixels of one zone agree with any other request there.
    """
    spec = spec or SynthSpec()
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise Sar2OptError(f"end {end} is before start {start}")
    items: list[dict] = []
    for part in region_zones(bbox, spec.res_m):
        s1 = s1_dates(first, last, epsg=part.epsg, spec=spec)
        s2 = s2_dates(first, last, epsg=part.epsg, spec=spec)
        if not s1 and not s2:
            raise Sar2OptError(f"no Sentinel-1 or Sentinel-2 date between {start} and {end}")
        items += write_zone(out_dir, part.grid, s1, s2, spec, id_suffix=f"_UTM{part.name}")
    write_catalog(items, out_dir)
    return items
