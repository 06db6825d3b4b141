"""The in-memory patch reference: counts on a cube with known clouds, spatial split, NaN
handling, input sets."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sar2opt.config import PatchSpec
from sar2opt.data.patches import PatchError
from tests.helpers.patch_reference import extract_patches, split_columns

SAR, OPT = ["vv", "vh"], ["B02", "B03", "B04", "B08"]


def make_cube(n_t: int = 3, size: int = 96, seed: int = 0) -> xr.DataArray:
    """All clear at t=0; a 16x16 cloud in the NW corner at t=1; no S2 at all at t=2."""
    rng = np.random.default_rng(seed)
    sar = rng.normal(-15, 3, (n_t, 2, size, size)).astype(np.float32)
    opt = np.clip(0.1 + 0.01 * (sar[:, :1] + 15) * np.ones((1, 4, 1, 1)), 0, 1).astype(np.float32)
    clear = np.ones((n_t, 1, size, size), np.float32)
    if n_t > 1:
        clear[1, 0, :16, :16] = 0.0
        opt[1, :, :16, :16] = 0.6  # bright cloud
    if n_t > 2:
        clear[2] = 0.0
        opt[2] = np.nan
    data = np.concatenate([sar, opt, clear], axis=1)
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"band": SAR + OPT + ["clear"], "time": np.arange(n_t)},
    )


SPEC = PatchSpec(patch_px=32, stride_px=16, min_clear_frac=0.98, val_frac=0.2)


def test_counts_and_shapes() -> None:
    p = extract_patches(make_cube(), SAR, OPT, SPEC)
    # x_split = 96 - max(round(0.2*96), 32) = 64: train cols {0,16,32}, val col {64}, 5 rows.
    # t0: 15 train + 5 val; t1: the cloud kills (r0,c0) -> 14 + 5; t2 (no S2): nothing.
    assert split_columns(96, SPEC) == 64
    assert (p["split"] == "train").sum() == 29
    assert (p["split"] == "val").sum() == 10
    assert p["sar"].shape == (39, 2, 32, 32) and p["sar"].dtype == np.float32
    assert p["opt"].shape == (39, 4, 32, 32)
    assert p["mask"].shape == (39, 1, 32, 32)
    assert not (p["time"] == 2).any()
    assert not ((p["time"] == 1) & (p["row"] == 0) & (p["col"] == 0)).any()
    for k in ("sar", "opt", "mask"):
        assert np.isfinite(p[k]).all()


def test_no_val_patch_overlaps_a_train_patch() -> None:
    p = extract_patches(make_cube(size=160), SAR, OPT, SPEC)
    tr, va = p["split"] == "train", p["split"] == "val"
    assert tr.sum() > 0 and va.sum() > 0
    # Columns are disjoint pixel ranges: every train patch ends before any val patch starts.
    assert (p["col"][tr] + SPEC.patch_px).max() <= p["col"][va].min()
    # Each location lies on one side for all dates.
    assert not set(p["col"][tr]) & set(p["col"][va])


def test_patch_content_matches_cube() -> None:
    cube = make_cube()
    p = extract_patches(cube, SAR, OPT, SPEC)
    i = int(np.flatnonzero((p["time"] == 1) & (p["row"] == 16) & (p["col"] == 32))[0])
    want = cube.isel(time=1, y=slice(16, 48), x=slice(32, 64)).sel(band=OPT).values
    np.testing.assert_array_equal(p["opt"][i], want)


def test_nan_sar_drops_patch_and_cloudy_nan_opt_is_masked() -> None:
    cube = make_cube(n_t=1)
    cube[0, 0, 40, 5] = np.nan  # SAR gap: every patch covering (40, 5) must go
    cube[0, 2:6, 70, 70] = np.nan  # optical NaN under a cloud pixel: allowed, masked
    cube[0, 6, 70, 70] = 0.0
    spec = PatchSpec(patch_px=32, stride_px=16, min_clear_frac=0.9, val_frac=0.2)
    p = extract_patches(cube, SAR, OPT, spec)
    rows, cols = p["row"], p["col"]
    covers = (rows <= 40) & (rows + 32 > 40) & (cols <= 5) & (cols + 32 > 5)
    assert not covers.any()
    assert (p["split"] == "train").sum() == 15 - 2  # rows 16 and 32 at col 0 lost
    hit = (rows <= 70) & (rows + 32 > 70) & (cols == 64)
    assert hit.sum() == 2
    for i in np.flatnonzero(hit):
        r = 70 - rows[i]
        assert p["mask"][i, 0, r, 6] == 0.0 and (p["opt"][i, :, r, 6] == 0.0).all()
        assert np.isfinite(p["opt"][i]).all()


def test_all_cloudy_is_a_clear_error() -> None:
    cube = make_cube(n_t=1)
    cube[0, 6] = 0.0
    with pytest.raises(PatchError, match="no training patches"):
        extract_patches(cube, SAR, OPT, SPEC)


def test_missing_band_is_a_clear_error() -> None:
    with pytest.raises(PatchError, match="lacks band"):
        extract_patches(make_cube(), SAR, ["B02", "B11"], SPEC)


def with_aux(cube: xr.DataArray, dem: bool = True, prior: bool = True) -> xr.DataArray:
    """Add a DEM (metres, a ramp) and prior_<band> (the t=0 optical shifted by +0.01)."""
    extra, names = [], []
    n_t, _, h, w = cube.shape
    if prior:
        p = np.broadcast_to(cube.sel(band=OPT).values[:1] + 0.01, (n_t, len(OPT), h, w))
        extra.append(p)
        names += [f"prior_{b}" for b in OPT]
    if dem:
        ramp = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        extra.append(np.broadcast_to(100 + ramp, (n_t, 1, h, w)))
        names.append("dem")
    data = np.concatenate([cube.values, *extra], axis=1)
    return xr.DataArray(
        data, dims=cube.dims, coords={"band": [*cube["band"].values, *names], "time": cube.time}
    )


@pytest.mark.parametrize(
    ("input_set", "keys"),
    [("S", set()), ("SD", {"dem"}), ("SO", {"prior"}), ("SOD", {"dem", "prior"})],
)
def test_input_sets_add_dem_and_prior(input_set: str, keys: set[str]) -> None:
    cube = with_aux(make_cube())
    p = extract_patches(cube, SAR, OPT, SPEC, input_set)
    base = {"sar", "opt", "mask", "split", "time", "row", "col"}
    assert set(p) == base | keys
    if "dem" in keys:
        assert p["dem"].shape == (39, 1, 32, 32) and p["dem"].dtype == np.float32
        # The DEM window follows the patch origin: the ramp's value is 100 + row.
        np.testing.assert_array_equal(p["dem"][:, 0, :, 0], 100 + p["row"][:, None] + np.arange(32))
    if "prior" in keys:
        i = int(np.flatnonzero((p["time"] == 1) & (p["row"] == 16) & (p["col"] == 32))[0])
        want = cube.isel(time=0, y=slice(16, 48), x=slice(32, 64)).sel(band=OPT).values + 0.01
        np.testing.assert_allclose(p["prior"][i], want, rtol=1e-6)


def test_nan_dem_drops_patches_and_missing_aux_is_a_clear_error() -> None:
    cube = with_aux(make_cube(n_t=1))
    cube.loc[{"band": "dem"}] = cube.sel(band="dem").where(cube.x != 5)  # a DEM void at x=5
    p = extract_patches(cube, SAR, OPT, SPEC, "SD")
    assert not ((p["col"] <= 5) & (p["col"] + 32 > 5)).any()
    assert len(p["split"]) == len(extract_patches(cube, SAR, OPT, SPEC, "S")["split"]) - 5
    with pytest.raises(PatchError, match=r"lacks band\(s\) \['dem'\] \(input set SD\)"):
        extract_patches(with_aux(make_cube(), dem=False), SAR, OPT, SPEC, "SD")
    with pytest.raises(PatchError, match="prior_B02"):
        extract_patches(with_aux(make_cube(), prior=False), SAR, OPT, SPEC, "SOD")
    # Explicit band names (the cube's attrs) replace the default prior_<band>.
    renamed = with_aux(make_cube()).assign_coords(
        band=[*SAR, *OPT, "clear", "p1", "p2", "p3", "p4", "elev"]
    )
    p = extract_patches(renamed, SAR, OPT, SPEC, "SOD", "elev", ["p1", "p2", "p3", "p4"])
    assert p["prior"].shape[1] == 4 and p["dem"].shape[1] == 1
