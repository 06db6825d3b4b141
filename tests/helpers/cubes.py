"""A small in-memory cube with every band the patch stages read, and its known defects
(a cloud, a SAR gap, a DEM gap), for the patch index and stream tests."""

from __future__ import annotations

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
