"""A synthetic but learnable Sentinel-1/Sentinel-2 scene in Pará, for tests and offline demos.

Why synthetic: the pipeline must run end to end without internet, and a model trained on it must
have something real to learn. So the scene is built from one land-cover history and a few smooth
physical fields (biomass, pasture vigour, soil moisture, canopy texture) that drive BOTH the SAR
backscatter and the optical reflectance; only speckle, sensor noise and clouds are independent.

Land cover (1 forest, 2 pasture, 3 bare/cleared, 4 water) comes from a clearing-time map: a
meandering river with a forested buffer, a N-S highway with old pasture along it and fishbone side
roads whose clearings (in lots) grow during the period. Each date's cover is
``clearing_day <= date``, so deforestation only ever grows.

Besides the catalog (``items.parquet``/``items.json``, COGs in ``cogs/``) the generator writes the
truth it knows under ``truth/``: ``{item_id}_landcover.tif`` (uint8 classes) for every item and
``{item_id}_clear.tif`` (the S2 bands without clouds/shadows, uint16 DN) for every S2 item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from sar2opt.catalog.cog import write_cog
from sar2opt.catalog.items import S1_NODATA, s1_item, s2_item, write_catalog
from sar2opt.grid import GridSpec

FOREST, PASTURE, BARE, WATER = 1, 2, 3, 4
CLASS_NAMES = {FOREST: "forest", PASTURE: "pasture", BARE: "bare", WATER: "water"}

# Backscatter in dB (C-band, Amazon literature, e.g. Reiche et al. / Joshi et al.).
SIGMA0_DB = {
    FOREST: (-7.0, -12.5),
    PASTURE: (-10.0, -17.0),
    BARE: (-9.0, -16.0),
    WATER: (-20.0, -26.0),
}
S2_BAND_NAMES = ("B02", "B03", "B04", "B08")
# Surface reflectance per class for B02, B03, B04, B08.
REFLECTANCE = {
    FOREST: (0.02, 0.04, 0.025, 0.30),
    PASTURE: (0.05, 0.08, 0.07, 0.28),
    BARE: (0.09, 0.12, 0.15, 0.22),
    WATER: (0.03, 0.04, 0.03, 0.02),
}
SCL_OF_CLASS = {FOREST: 4, PASTURE: 4, BARE: 5, WATER: 6}
SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH = 3, 8, 9
ENL = 4.4  # equivalent number of looks of the speckle
# Cloud cover (fraction) cycled over the S2 dates: clear, cloudy and in-between dates.
CLOUD_COVER_CYCLE = (0.02, 0.55, 0.0, 0.30, 0.85, 0.10, 0.45, 0.05)
# Shadows fall away from the sun (NE at 10:30 local in July) by ~1 km for ~1.5 km high clouds.
SHADOW_SHIFT_M = (800.0, -600.0)  # (south, east) metres
S1_TIME = (9, 15)  # UTC of the descending pass over -55 E
S2_TIME = (14, 0)  # UTC of the 10:30 local S2 overpass


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``scale_px`` (FFT)."""
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    filt = np.exp(-2.0 * (math.pi * scale_px) ** 2 * (kx**2 + ky**2))
    f = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=shape)
    return ((f - f.mean()) / (f.std() + 1e-12)).astype(np.float32)


def fractal_field(
    rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.2, outer_px: float = 400.0
) -> np.ndarray:
    """Zero-mean, unit-std power-law (1/k^beta) field: cloud-like, structure at every scale."""
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    k2 = kx**2 + ky**2 + (1.0 / outer_px) ** 2
    f = np.fft.irfft2(np.fft.rfft2(noise) * k2 ** (-beta / 4.0), s=shape)
    return ((f - f.mean()) / (f.std() + 1e-12)).astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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


@dataclass
class _Layout:
    """Static layers of the scene (pixel arrays on the grid)."""

    clearing_day: np.ndarray  # float32 day (from start) each pixel becomes non-forest; inf: never
    water: np.ndarray  # bool
    road_day: np.ndarray  # float32 day a road reaches the pixel; inf: no road
    old_bare: np.ndarray  # bool: degraded bare patches inside old pasture
    biomass: np.ndarray  # unit-std fields
    vigour: np.ndarray
    moisture: np.ndarray
    texture: np.ndarray
    sediment: np.ndarray


def _layout(rng: np.random.Generator, grid: GridSpec, span_days: float) -> _Layout:
    h, w = grid.shape
    res = grid.res_m
    rr, cc = np.meshgrid(
        np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
    )

    def px(m: float) -> float:
        return m / res

    # River: W->E meanders at ~72 % of the height, 40-70 m wide.
    cols = np.arange(w, dtype=np.float64)
    phase = rng.uniform(0, 2 * math.pi, 3)
    centre = (
        0.72 * h
        + px(320) * np.sin(2 * math.pi * cols / px(3100) + phase[0])
        + px(130) * np.sin(2 * math.pi * cols / px(1150) + phase[1])
        + px(60) * np.sin(2 * math.pi * cols / px(520) + phase[2])
    )
    slope = np.gradient(centre)
    half_w = px(25) + px(10) * np.sin(2 * math.pi * cols / px(2300) + phase[1])
    river_dist = np.abs(rr - centre[None, :].astype(np.float32)) / np.sqrt(1 + slope**2)[None, :]
    water = river_dist < half_w[None, :]
    river_dist_m = (river_dist - half_w[None, :]) * res

    # Highway N-S at ~40 % of the width, gently curving; fishbone side roads E and W.
    main_col = (
        0.40 * w + px(150) * np.sin(2 * math.pi * np.arange(h) / px(8000) + phase[2])
    ).astype(np.float32)
    along = cc - main_col[:, None]  # px, + east
    road_day = np.full((h, w), np.inf, np.float32)
    road_day[np.abs(along) <= 1.0] = -np.inf

    clearing = np.full((h, w), np.inf, np.float32)
    # Old pasture along the highway, 400-800 m each side.
    edge = smooth_field(rng, (h, w), px(400))
    main_strip = px(600) + px(150) * edge
    clearing[np.abs(along) < main_strip] = -np.inf

    n_side = max(2, round(h * res / 2000.0))
    spacing = h / n_side
    growth = 3.0 / res  # px/day clearing-front advance for active lots
    lot_px = px(300)
    depth_px = px(1000)
    wobble = smooth_field(rng, (h, w), px(80)) * px(40)
    for j in range(n_side):
        row_j = (j + 0.5) * spacing + rng.uniform(-0.15, 0.15) * spacing
        river_row = centre[int(np.clip(main_col[min(int(row_j), h - 1)], 0, w - 1))]
        if abs(row_j - river_row) < px(500):
            continue  # no side road running along the river
        d = np.abs(rr - np.float32(row_j))
        for side in (-1.0, 1.0):
            length = rng.uniform(0.30, 0.55) * w
            extend = rng.uniform(0.0, 12.0) / res  # px/day the road tip advances
            a = along * side
            on_side = a > 0
            # Road tip grows: pixel a is reached at day (a - length) / extend.
            tip_day = np.where(a <= length, -np.inf, (a - length) / max(extend, 1e-6))
            road_here = on_side & (d <= 0.75)
            road_day = np.where(road_here, np.minimum(road_day, tip_day), road_day)
            # Clearings in lots along the road: older (wider) near the highway.
            ok = on_side & (a <= length) & (d < depth_px)
            frac = np.clip(a / length, 0, 1)
            w0 = px(550) * (1.0 - frac) ** 0.7
            n_lots = int(length // lot_px) + 2
            active = rng.random(n_lots) < 0.55
            offset = rng.uniform(-25.0, 45.0, n_lots).astype(np.float32)
            lot = np.clip((a // lot_px).astype(np.int64), 0, n_lots - 1)
            dist = d - w0 - wobble
            t_active = dist / growth + offset[lot]
            t_static = np.where(dist < 0, -np.inf, np.inf).astype(np.float32)
            t = np.where(active[lot], t_active, t_static)
            clearing = np.where(ok, np.minimum(clearing, t), clearing)

    # Scattered old pasture patches away from roads.
    patches = smooth_field(rng, (h, w), px(250))
    clearing[patches > np.quantile(patches, 0.95)] = -np.inf
    # Legal riparian reserve: the river stays forested.
    clearing[river_dist_m < 100.0] = np.inf
    clearing[clearing > span_days + 1] = np.inf
    road_day[water] = np.inf
    road_day[np.abs(along) <= 1.0] = -np.inf  # the highway bridges the river

    old_bare = smooth_field(rng, (h, w), px(60)) > 1.6
    return _Layout(
        clearing_day=clearing.astype(np.float32),
        water=water,
        road_day=road_day.astype(np.float32),
        old_bare=old_bare,
        biomass=smooth_field(rng, (h, w), px(300)),
        vigour=smooth_field(rng, (h, w), px(150)),
        moisture=smooth_field(rng, (h, w), px(400)),
        texture=smooth_field(rng, (h, w), px(15)),
        sediment=smooth_field(rng, (h, w), px(500)),
    )


def landcover(layout: _Layout, day: float) -> np.ndarray:
    """Class map (uint8) on ``day`` (days since start): deforestation only grows with ``day``."""
    lc = np.full(layout.water.shape, FOREST, np.uint8)
    cleared = layout.clearing_day <= day
    lc[cleared & (layout.clearing_day < 0) & ~layout.old_bare] = PASTURE
    lc[cleared & (layout.clearing_day < 0) & layout.old_bare] = BARE
    lc[cleared & (layout.clearing_day >= 0)] = BARE  # fresh clearing: slash and bare soil
    lc[layout.road_day <= day] = BARE
    lc[layout.water] = WATER
    return lc


def _sar(
    layout: _Layout, lc: np.ndarray, rng: np.random.Generator, res_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """VV, VH linear power: class sigma0 + biomass/vigour/moisture texture, then gamma speckle."""
    h, w = lc.shape
    m_t = 0.8 * layout.moisture + 0.6 * smooth_field(rng, (h, w), 400.0 / res_m)
    wind = smooth_field(rng, (h, w), 300.0 / res_m)
    vv = np.zeros((h, w), np.float32)
    vh = np.zeros((h, w), np.float32)
    terms = {
        FOREST: (
            0.6 * layout.biomass + 0.3 * layout.texture,
            0.9 * layout.biomass + 0.3 * layout.texture,
        ),
        PASTURE: (1.0 * layout.vigour, 1.3 * layout.vigour),
        BARE: (1.2 * m_t, 0.8 * m_t),
        WATER: (1.2 * wind, 0.6 * wind),
    }
    for cls, (dvv, dvh) in terms.items():
        sel = lc == cls
        vv[sel] = SIGMA0_DB[cls][0] + dvv[sel]
        vh[sel] = SIGMA0_DB[cls][1] + dvh[sel]
    # Incidence-angle trend across the swath and a per-date calibration/moisture offset.
    trend = (-0.6 * (np.arange(w, dtype=np.float32) / w - 0.5))[None, :]
    offset = np.float32(rng.normal(0.0, 0.2))
    out = []
    for db in (vv, vh):
        lin = 10.0 ** ((db + trend + offset) / 10.0)
        speckle = rng.gamma(ENL, 1.0 / ENL, size=(h, w)).astype(np.float32)
        out.append((lin * speckle).astype(np.float32))
    return out[0], out[1]


def _surface_reflectance(layout: _Layout, lc: np.ndarray) -> np.ndarray:
    """(4, y, x) cloud-free reflectance for B02, B03, B04, B08 from class + the shared fields."""
    b, v, m, tex, sed = (
        layout.biomass,
        layout.vigour,
        layout.moisture,
        layout.texture,
        layout.sediment,
    )
    refl = np.zeros((4,) + lc.shape, np.float32)
    for cls, base in REFLECTANCE.items():
        sel = lc == cls
        for i, r in enumerate(base):
            refl[i][sel] = r
    f = lc == FOREST
    refl[3][f] += 0.03 * b[f] + 0.015 * tex[f]
    for i in range(3):
        refl[i][f] *= 1.0 - 0.08 * b[f] - 0.04 * tex[f]
    p = lc == PASTURE
    refl[3][p] += 0.03 * v[p]
    refl[2][p] -= 0.012 * v[p]
    refl[1][p] -= 0.005 * v[p]
    s = lc == BARE
    for i in range(4):
        refl[i][s] *= 1.0 - 0.12 * m[s]
    wt = lc == WATER
    refl[2][wt] += 0.008 * sed[wt]
    refl[1][wt] += 0.005 * sed[wt]
    return np.clip(refl, 0.001, 1.0)


def _clouds(
    rng: np.random.Generator, shape: tuple[int, int], cover: float, res_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cloud opacity, cloud reflectance and shadow opacity for a target cover fraction."""
    h, w = shape
    if cover <= 0.0:
        z = np.zeros(shape, np.float32)
        return z, z, z
    sr = round(SHADOW_SHIFT_M[0] / res_m)
    sc = round(SHADOW_SHIFT_M[1] / res_m)
    pad = max(abs(sr), abs(sc)) + 8
    big = fractal_field(rng, (h + 2 * pad, w + 2 * pad), outer_px=300.0)
    crop = big[pad : pad + h, pad : pad + w]
    thr = np.float32(np.quantile(crop, 1.0 - cover))
    soft = 0.5
    alpha_big = _smoothstep((big - thr) / soft)
    bright_big = 0.30 + 0.30 * np.clip((big - thr) / (3.0 * soft), 0.0, 1.0)
    alpha = alpha_big[pad : pad + h, pad : pad + w]
    bright = bright_big[pad : pad + h, pad : pad + w]
    # The shadow at a pixel is cast by the cloud up-sun of it (north-east: -rows, +cols).
    shadow = alpha_big[pad - sr : pad - sr + h, pad - sc : pad - sc + w]
    return alpha.astype(np.float32), bright.astype(np.float32), shadow.astype(np.float32)


def _optical(
    layout: _Layout, lc: np.ndarray, rng: np.random.Generator, cover: float, res_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TOA-like reflectance with clouds, clear reflectance, SCL) for one S2 date."""
    clear = _surface_reflectance(layout, lc)
    clear[0] += np.float32(abs(rng.normal(0.004, 0.002)))  # a little haze in blue
    noise_mul = 1.0 + rng.normal(0.0, 0.02, clear.shape).astype(np.float32)
    noise_add = rng.normal(0.0, 0.002, clear.shape).astype(np.float32)
    clear = np.clip(clear * noise_mul + noise_add, 0.0001, 1.0)

    alpha, bright, shadow = _clouds(rng, lc.shape, cover, res_m)
    dark = np.float32(rng.uniform(0.3, 0.5))
    shaded = clear * (1.0 - shadow * (1.0 - dark))[None]
    white = np.array([1.02, 1.0, 0.99, 1.0], np.float32)[:, None, None]
    cloud_refl = bright[None] * white
    top = (1.0 - alpha[None]) * shaded + alpha[None] * cloud_refl

    scl = np.zeros(lc.shape, np.uint8)
    for cls, code in SCL_OF_CLASS.items():
        scl[lc == cls] = code
    scl[(shadow >= 0.2) & (alpha < 0.02)] = SCL_SHADOW
    scl[alpha >= 0.02] = SCL_CLOUD_MED
    scl[alpha >= 0.5] = SCL_CLOUD_HIGH
    return top, clear, scl


def _to_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(refl * 10000.0), 1, 65535).astype(np.uint16)


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
) -> list[dict]:
    """Write the synthetic scene's COGs and catalog under ``out_dir``; return the STAC items.

    S1 (``S1A_IW_SYNTH_...``) every 12 days from ``start`` at 09:15Z; S2
    (``S2B/S2A_MSIL2A_SYNTH_...``) every 5 days from ``start`` + 2 days at 14:00Z.
    The same seed gives identical rasters.
    """
    out_dir = Path(out_dir)
    cogs = out_dir / "cogs"
    truth = out_dir / "truth"
    grid = scene_grid(size_km, res_m, centre_lonlat, epsg)
    t0 = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    s1_dates = [
        t0 + timedelta(days=12 * k, hours=S1_TIME[0], minutes=S1_TIME[1]) for k in range(n_s1)
    ]
    s2_dates = [
        t0 + timedelta(days=2 + 5 * k, hours=S2_TIME[0], minutes=S2_TIME[1]) for k in range(n_s2)
    ]
    span = max([(d - t0).total_seconds() / 86400 for d in s1_dates + s2_dates] + [1.0])
    layout = _layout(np.random.default_rng([seed, 0]), grid, span)
    common = {"sar2opt:synthetic": True}

    items: list[dict] = []
    for k, dt in enumerate(s1_dates):
        day = (dt - t0).total_seconds() / 86400
        rng = np.random.default_rng([seed, 1, k])
        lc = landcover(layout, day)
        vv, vh = _sar(layout, lc, rng, res_m)
        item_id = f"S1A_IW_SYNTH_{dt:%Y%m%dT%H%M%S}"
        hrefs = {}
        for pol, arr in (("vv", vv), ("vh", vh)):
            hrefs[pol] = write_cog(cogs / f"{item_id}_{pol}.tif", arr, grid, S1_NODATA, "float32")
        write_cog(truth / f"{item_id}_landcover.tif", lc, grid, 0, "uint8")
        items.append(
            s1_item(
                item_id,
                dt,
                grid,
                hrefs,
                platform="SENTINEL-1A",
                orbit_state="descending",
                relative_orbit=97,
                extra_properties=common,
            )
        )

    for k, dt in enumerate(s2_dates):
        day = (dt - t0).total_seconds() / 86400
        rng = np.random.default_rng([seed, 2, k])
        cover = CLOUD_COVER_CYCLE[k % len(CLOUD_COVER_CYCLE)]
        if cover > 0:
            cover = float(np.clip(cover + rng.uniform(-0.02, 0.02), 0.005, 0.95))
        lc = landcover(layout, day)
        top, clear, scl = _optical(layout, lc, rng, cover, res_m)
        platform = "Sentinel-2B" if k % 2 == 0 else "Sentinel-2A"
        item_id = f"S2{platform[-1]}_MSIL2A_SYNTH_{dt:%Y%m%dT%H%M%S}"
        dn = _to_dn(top)
        hrefs = {}
        for i, band in enumerate(S2_BAND_NAMES):
            hrefs[band] = write_cog(cogs / f"{item_id}_{band}.tif", dn[i], grid, 0, "uint16")
        # QA60 is all zeros, as in the real archive after 2022: a filter must not trust it.
        hrefs["QA60"] = write_cog(
            cogs / f"{item_id}_QA60.tif", np.zeros(grid.shape, np.uint16), grid, None, "uint16"
        )
        hrefs["SCL"] = write_cog(cogs / f"{item_id}_SCL.tif", scl, grid, 0, "uint8")
        write_cog(truth / f"{item_id}_landcover.tif", lc, grid, 0, "uint8")
        write_cog(truth / f"{item_id}_clear.tif", _to_dn(clear), grid, 0, "uint16")
        cloud_pct = 100.0 * float(np.isin(scl, (SCL_CLOUD_MED, SCL_CLOUD_HIGH)).mean())
        items.append(
            s2_item(
                item_id,
                dt,
                grid,
                hrefs,
                cloud_cover=cloud_pct,
                platform=platform,
                extra_properties=common,
            )
        )
    write_catalog(items, out_dir)
    return items
