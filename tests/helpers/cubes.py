"""Small cubes: one in memory with every band the patch stages read and known defects (a
cloud, a SAR gap, a DEM gap) for the patch index and stream tests, and a Zarr cube whose optical
is a fixed mix of smoothed SAR, for training runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from sar2opt.config import PatchSpec

SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]
PRIOR = [f"prior_{b}" for b in OPT]
X0, Y0, RES = 500_000.0, 9_000_000.0, 10.0  # top-left pixel edge, metres
SPEC = PatchSpec(patch_px=16, stride_px=8, min_clear_frac=0.98, val_frac=0.2, test_frac=0.1)
NAN_SAR = (2, 150, 20)  # (t, y, x) of a SAR gap
CLOUD = (1, slice(0, 40), slice(0, 50))  # a cloud at t=1


def make_cube(n_t: int = 3, h: int = 192, w: int = 256, seed: int = 0) -> xr.DataArray:
    """SAR dB + optical + clear + prior + dem, with a cloud, a SAR gap, a DEM gap, x/y coords."""
    rng = np.random.default_rng(seed)
    sar = rng.normal(-15, 3, (n_t, 2, h, w))
    opt = rng.uniform(0.0, 0.3, (n_t, 4, h, w))
    clear = np.ones((n_t, 1, h, w))
    t, ys, xs = CLOUD
    clear[t, 0, ys, xs], opt[t, :, ys, xs] = 0.0, 0.6
    prior = np.broadcast_to(opt[:1] + 0.01, opt.shape).copy()
    if h > NAN_SAR[1] and w > 230:
        sar[NAN_SAR[0], 0, NAN_SAR[1], NAN_SAR[2]] = np.nan
        clear[0, 0, 100, 40], opt[0, :, 100, 40] = 0.0, np.nan  # NaN optical under cloud: ok
    dem = 100 + rng.normal(0, 5, (n_t, 1, h, w))
    if h > 30 and w > 230:
        dem[0, 0, 30, 230] = np.nan  # a DEM gap matters only to input sets with D
    data = np.concatenate([sar, opt, clear, prior, dem], axis=1).astype(np.float32)
    bands = [*SAR, *OPT, "clear", *PRIOR, "dem"]
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.arange(n_t),
            "band": np.array(bands, dtype=object),
            "y": Y0 - RES * (np.arange(h) + 0.5),
            "x": X0 + RES * (np.arange(w) + 0.5),
        },
    )


#: The ``cube_spec`` attrs of ``write_cube(aux=True)``'s cube: its prior's window.
AUX_CUBE_SPEC = {"max_dt_days": 5.0, "prior_days": 20.0, "cloud_dilate_px": 2}

# 32 px patches in 96 px split blocks, 16 px apart across splits: train, val and test
# patches on the 192 px test cube (4 blocks: train 2, val 1, test 1).
SMALL_BLOCKS = ("patches.patch_px=32", "patches.block_px=96", "patches.gap_px=16")


def _smooth(a: np.ndarray, k: int) -> np.ndarray:
    """Box blur along the last two axes (k x k, edge-padded), numpy only."""
    pad = k // 2
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    c = a.cumsum(-1).cumsum(-2)
    c = np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) / (k * k)


def learnable_pair(
    rng: np.random.Generator, n_t: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, sar, opt): smooth noise z (T, 2, size, size), SAR in dB from it, and optical
    reflectance a fixed mix of smoothed z (what a model can learn from the SAR)."""
    z = _smooth(rng.normal(0, 1, (n_t, 2, size, size)), 5) * 4
    sar = np.stack([-12 + 3 * z[:, 0], -19 + 3 * z[:, 1]], 1)
    mix = np.array([[0.02, -0.01], [0.03, 0.0], [0.02, 0.02], [0.08, -0.04]])
    opt = np.clip(np.array([0.05, 0.07, 0.06, 0.25])[None, :, None, None]
                  + np.einsum("oc,tchw->tohw", mix, _smooth(z, 3)), 0.0, 1.0)  # fmt: skip
    return z, sar, opt


def write_cube(path: Path, n_t: int = 4, size: int = 192, seed: int = 0, aux: bool = False) -> None:
    """SAR in dB; optical reflectance = a fixed mix of smoothed SAR; a cloud at t=1.

    ``aux``: also a DEM (metres) and the prior optical (prior_<band>: the t=0 optical).
    """
    rng = np.random.default_rng(seed)
    z, sar, opt = learnable_pair(rng, n_t, size)
    clear = np.ones((n_t, 1, size, size))
    clear[1, 0, 20:60, 20:60] = 0.0
    opt[1, :, 20:60, 20:60] = 0.5
    parts, names, attrs = [sar, opt, clear], SAR + OPT + ["clear"], {}
    if aux:
        parts += [np.broadcast_to(opt[:1], opt.shape), 100 + 50 * z[:, :1]]
        names += [f"prior_{b}" for b in OPT] + ["elevation"]
        attrs = {
            "dem_band": "elevation",
            "prior_bands": [f"prior_{b}" for b in OPT],
            "cube_spec": AUX_CUBE_SPEC,  # as build.cube_attrs writes it (a few keys)
        }
    save_cube(path, np.concatenate(parts, 1), names, attrs)


def save_cube(path: Path, cube: np.ndarray, bands: list[str], attrs: dict) -> None:
    """A (time, band, y, x) cube as the cube stage stores it: float32, dates 12 days apart
    from 2024-01-01, ``sar_bands``/``opt_bands`` (SAR, OPT) and ``attrs`` in the store."""
    da = xr.DataArray(
        cube.astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array("2024-01-01", dtype="datetime64[ns]")
            + np.arange(cube.shape[0]) * 12 * 86400 * 10**9,
            "band": bands,
        },
    )
    ds = xr.Dataset({"cube": da}, attrs={"sar_bands": SAR, "opt_bands": OPT, **attrs})
    ds.to_zarr(path, mode="w")


#: The cloudy S2 bands of ``write_sc_cube``: the same-date reflectance, then its cloud mask.
CLOUDY = [*(f"cloudy_{b}" for b in OPT), "cloud_mask"]


def write_sc_cube(path: Path, *, seed: int, size: int = 192, n_t: int = 4, clouds: bool) -> None:
    """A learnable SC cube: optical a mix of smoothed SAR; the same-date S2 as observed and its
    cloud mask; with ``clouds``, a cloud over a third of the grid at every other date (the
    target stays clear: a cloud-removal cube), else every date clear."""
    rng = np.random.default_rng(seed)
    _, sar, opt = learnable_pair(rng, n_t, size)
    clear = np.ones((n_t, 1, size, size))
    mask = np.zeros((n_t, 1, size, size))
    if clouds:
        blob = _smooth(rng.normal(0, 1, (n_t, 1, size, size)), 15)
        mask[1::2] = (blob[1::2] > np.quantile(blob[1::2], 0.66)).astype(float)
    cloudy = np.where(mask > 0, 0.6, opt)
    cube = np.concatenate([sar, opt, clear, cloudy, mask], 1)
    attrs = {"cloudy_bands": CLOUDY,
             "cube_spec": {"max_dt_days": 10.0 + seed, "cloud_dilate_px": 3}}  # fmt: skip
    save_cube(path, cube, SAR + OPT + ["clear"] + CLOUDY, attrs)
