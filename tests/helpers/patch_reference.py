"""In-memory patch cutting: the reference the streamed patches and the patch index follow.

The trainer once cut every patch into memory with this; it now streams them
(``sar2opt.data.stream``) over a patch index (``sar2opt.data.index``), and this stays here
as the plain, readable statement of the validity rules both must keep (and the reference
``test_data_stream`` compares the streamed arrays with). The easternmost ``val_frac`` of the
x extent is validation, the rest training, each side with its own stride grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from sar2opt.config import PatchSpec
from sar2opt.data.inputs import uses_dem, uses_prior
from sar2opt.data.patches import CLEAR_BAND, DEM_BAND, PRIOR_PREFIX, PatchError
from sar2opt.ops import summed_area, window_sum


def _starts(lo: int, hi: int, patch: int, stride: int) -> list[int]:
    """Window starts s on a stride grid from ``lo`` with [s, s + patch) inside [lo, hi)."""
    return list(range(lo, hi - patch + 1, stride))


def split_columns(width: int, spec: PatchSpec) -> int:
    """First pixel column of the validation strip (== width when val_frac is 0).

    The strip is at least one patch wide so that a non-zero ``val_frac`` always yields
    validation patches when the sky allows.
    """
    if spec.val_frac <= 0:
        return width
    val_w = max(int(round(spec.val_frac * width)), spec.patch_px)
    return width - val_w


def extract_patches(
    cube: xr.DataArray, sar_bands: Sequence[str], opt_bands: Sequence[str], spec: PatchSpec,
    input_set: str = "S", dem_band: str = DEM_BAND, prior_bands: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Patches of ``cube`` (time, band, y, x) whose clear fraction is >= ``spec.min_clear_frac``.

    Returns float32 ``sar`` (N, Cs, P, P), ``opt`` (N, Co, P, P), ``mask`` (N, 1, P, P) (1 =
    clear optical pixel), ``split`` (N,) of "train"/"val", and the patch origin ``time``,
    ``row``, ``col`` (N,) as integer indices into the cube. Patches with any non-finite SAR
    value, or non-finite optical value at a clear pixel, are dropped; optical values at
    non-clear pixels are set to 0 (the mask keeps them out of losses and statistics).

    Input sets with D add ``dem`` (N, 1, P, P) from band ``dem_band``; with O they add
    ``prior`` (N, Co, P, P) from ``prior_bands`` (default ``prior_<opt band>``). A patch
    with a non-finite DEM or prior value is dropped: these are inputs, like the SAR.
    """
    sar_bands, opt_bands = list(sar_bands), list(opt_bands)
    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise PatchError(f"cube dims must be (time, band, y, x), got {cube.dims}")
    aux: dict[str, list[str]] = {}
    if uses_prior(input_set):
        aux["prior"] = (
            [f"{PRIOR_PREFIX}{b}" for b in opt_bands] if prior_bands is None else list(prior_bands)
        )
        if len(aux["prior"]) != len(opt_bands):
            raise PatchError(f"{len(aux['prior'])} prior bands for {len(opt_bands)} optical bands")
    if uses_dem(input_set):
        aux["dem"] = [dem_band]
    have = [str(b) for b in cube["band"].values]
    aux_bands = [b for v in aux.values() for b in v]
    missing = [b for b in [*sar_bands, *opt_bands, CLEAR_BAND, *aux_bands] if b not in have]
    if missing:
        raise PatchError(f"cube lacks band(s) {missing} (input set {input_set}); it has {have}")
    p, stride = spec.patch_px, spec.stride_px
    if p <= 0 or stride <= 0:
        raise PatchError(f"patch_px and stride_px must be positive, got {p}, {stride}")
    n_t, height, width = cube.sizes["time"], cube.sizes["y"], cube.sizes["x"]
    x_split = split_columns(width, spec)
    rows = _starts(0, height, p, stride)
    cols = {"train": _starts(0, x_split, p, stride), "val": _starts(x_split, width, p, stride)}

    cs, co = len(sar_bands), len(opt_bands)
    bands = [*sar_bands, *opt_bands, CLEAR_BAND, *aux_bands]
    aux_slices, i0 = {}, cs + co + 1
    for k, names in aux.items():
        aux_slices[k] = slice(i0, i0 + len(names))
        i0 += len(names)
    keys = ("sar", "opt", "mask", "split", "time", "row", "col", *aux)
    out: dict[str, list] = {k: [] for k in keys}
    for t in range(n_t):
        # One date at a time: a region cube does not fit in memory, one slice does.
        arr = np.asarray(cube.isel(time=t).sel(band=bands).values, dtype=np.float32)
        clear = np.nan_to_num(arr[cs + co], nan=0.0) > 0.5
        sar_ok = np.isfinite(arr[:cs]).all(axis=0)
        opt_ok = np.isfinite(arr[cs : cs + co]).all(axis=0) | ~clear
        aux_ok = np.isfinite(arr[cs + co + 1 :]).all(axis=0)
        bad = (~sar_ok | ~opt_ok | ~aux_ok).astype(np.int64)
        # Summed-area tables: clear fraction and bad-pixel count of every window in O(1).
        sat_clear, sat_bad = summed_area(clear.astype(np.int64)), summed_area(bad)
        for split, split_cols in cols.items():
            for r in rows:
                for c in split_cols:
                    if window_sum(sat_bad, r, c, r + p, c + p) > 0:
                        continue
                    if window_sum(sat_clear, r, c, r + p, c + p) / (p * p) < spec.min_clear_frac:
                        continue
                    win = arr[:, r : r + p, c : c + p]
                    m = clear[r : r + p, c : c + p]
                    out["sar"].append(win[:cs])
                    out["opt"].append(np.where(m, win[cs : cs + co], 0.0))
                    out["mask"].append(m[None].astype(np.float32))
                    for k, sl in aux_slices.items():
                        out[k].append(win[sl])
                    out["split"].append(split)
                    out["time"].append(t)
                    out["row"].append(r)
                    out["col"].append(c)

    n_train = out["split"].count("train")
    if n_train == 0:
        raise PatchError(
            f"no training patches: cube {n_t}x{height}x{width} px, patch {p} px, stride "
            f"{stride}, training strip {x_split} px wide, min_clear_frac {spec.min_clear_frac}; "
            "use a larger or less cloudy AOI, or lower patches.min_clear_frac / patch_px"
        )
    res: dict[str, np.ndarray] = {
        "sar": np.stack(out["sar"]).astype(np.float32),
        "opt": np.stack(out["opt"]).astype(np.float32),
        "mask": np.stack(out["mask"]).astype(np.float32),
        "split": np.array(out["split"]),
    }
    for k in aux:
        res[k] = np.stack(out[k]).astype(np.float32)
    for k in ("time", "row", "col"):
        res[k] = np.array(out[k], dtype=np.int64)
    return res
