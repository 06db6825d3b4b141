"""A training patch's scene-fit reference fitted over an inference-sized window around it
(``data.stream.ReferenceContext``): the model's own fit when the window is the patch, a
better fit under laid clouds when it is larger, and no pixel of a split held out further
than the patch's own in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from sar2opt.config import PatchSpec, load_config, reference_context_px
from sar2opt.data.index import assign_blocks, build_patch_index, split_pixels
from sar2opt.data.inputs import model_input
from sar2opt.data.stream import CloudMasks, ReferenceContext, read_patches
from sar2opt.models.reference import input_slices, reference_of
from tests.helpers.cubes import CLOUDY, OPT, SAR, write_sc_cube

P, SIZE = 32, 192
SPEC = PatchSpec(patch_px=P, stride_px=16, min_clear_frac=0.9, block_px=64, gap_px=8,
                 val_frac=0.2, test_frac=0.2)  # fmt: skip
NORM = {
    "sar_mean": [-12.0, -19.0], "sar_std": [3.0, 3.0],
    "opt_mean": [0.05, 0.07, 0.06, 0.25], "opt_std": [0.02, 0.03, 0.03, 0.08],
}  # fmt: skip
KW = {"sar_bands": SAR, "opt_bands": OPT, "aux": {"cloudy": CLOUDY}, "norm": NORM, "patch_px": P}


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> tuple[Path, object]:
    """An SC cube (clouds on every other date) and its train patches."""
    path = tmp_path_factory.mktemp("ctx") / "cube.zarr"
    write_sc_cube(path, seed=0, clouds=True, size=SIZE)
    index = build_patch_index(
        xr.open_zarr(path)["cube"], SAR, OPT, SPEC, input_set="SC", cloudy_bands=CLOUDY
    )
    return path, index[index["split"] == "train"].iloc[::2]  # every other: 52 patches


def context(side: int) -> ReferenceContext:
    return ReferenceContext(side, "SC", (SPEC.block_px,), (assign_blocks(SIZE, SIZE, SPEC),))


def test_the_window_is_centred_on_the_patch_and_shifted_inside_the_grid() -> None:
    ctx = context(128)
    assert ctx.window(80, 80, P, (SIZE, SIZE)) == (32, 32, 128, 128)  # centred
    assert ctx.window(0, 150, P, (SIZE, SIZE)) == (0, 64, 128, 128)  # shifted inside
    assert ctx.window(10, 10, P, (100, 300)) == (0, 0, 100, 128)  # the grid's side
    assert context(8).window(40, 50, P, (SIZE, SIZE)) == (40, 50, P, P)  # never below a patch


def test_a_patch_sized_context_is_the_models_own_reference(cube) -> None:
    path, rows = cube
    got = read_patches(path, rows, **KW, cloud_masks=CloudMasks(seed=0, rate=1.0),
                       reference_context=context(P))  # fmt: skip
    x = model_input(got, "SC")
    own = reference_of("scene_fit", x, input_slices("SC", x.shape[1], len(OPT))).numpy()
    np.testing.assert_array_equal(got["ref"], own)


def test_a_larger_context_fits_the_hidden_pixels_better(cube) -> None:
    """Under laid clouds (every patch) the fit over a 128-px window errs less on the hidden
    pixels than the fit over the 32-px patch: measured 0.00458 against 0.00498."""
    path, rows = cube
    mae = {}
    for side in (P, 128):
        got = read_patches(path, rows, **KW, cloud_masks=CloudMasks(seed=0, rate=1.0),
                           reference_context=context(side))  # fmt: skip
        hidden = (got["cloudy"][:, -1] > 0.5) & (got["mask"][:, 0] > 0)
        err = np.abs(got["ref"] - got["opt"]) * np.reshape(NORM["opt_std"], (1, -1, 1, 1))
        mae[side] = float(err.transpose(1, 0, 2, 3)[:, hidden].mean())
        assert hidden.sum() > 10_000
    assert mae[128] < 0.95 * mae[P], mae


def test_windows_fitted_a_few_at_a_time_give_what_one_at_a_time_does(cube, monkeypatch) -> None:
    """A read fits its windows' references in chunks of ``REF_CHUNK`` (memory); each window's
    fit, fill and error are its own, so the chunk size changes nothing."""
    from dataclasses import replace

    from sar2opt.data import stream

    path, rows = cube
    ctx = replace(context(128), with_error=True)
    got = {}
    for chunk in (1, 5, len(rows)):
        monkeypatch.setattr(stream, "REF_CHUNK", chunk)
        got[chunk] = read_patches(path, rows, **KW, cloud_masks=CloudMasks(seed=0, rate=1.0),
                                  reference_context=ctx)  # fmt: skip
    for chunk in (5, len(rows)):
        for key in ("ref", "ref_err"):
            np.testing.assert_allclose(got[chunk][key], got[1][key], rtol=1e-5, atol=1e-6)
    assert len(rows) > 5 and np.isfinite(got[1]["ref_err"]).all()


def _edit_cloudy(src: Path, dst: Path, where: np.ndarray) -> None:
    """A copy of the cube whose same-date S2 reflectance is changed at the pixels ``where``."""
    shutil.copytree(src, dst)
    arr = zarr.open_group(str(dst), mode="r+")["cube"]
    bands = list(xr.open_zarr(dst)["band"].values)
    for b in CLOUDY[:-1]:
        i = bands.index(b)
        for t in range(arr.shape[0]):
            v = arr[t, i]
            arr[t, i] = np.where(where, v + 0.2, v)


def test_held_out_pixels_never_shape_a_training_reference(cube, tmp_path) -> None:
    path, rows = cube
    held = split_pixels(SIZE, SIZE, SPEC, "val") | split_pixels(SIZE, SIZE, SPEC, "test")
    train = split_pixels(SIZE, SIZE, SPEC, "train")
    base = read_patches(path, rows, **KW, reference_context=context(128))["ref"]
    _edit_cloudy(path, tmp_path / "held.zarr", held)
    same = read_patches(tmp_path / "held.zarr", rows, **KW, reference_context=context(128))
    np.testing.assert_array_equal(same["ref"], base)
    # the same edit on train pixels does move them: the test can fail
    _edit_cloudy(path, tmp_path / "train.zarr", train)
    moved = read_patches(tmp_path / "train.zarr", rows, **KW, reference_context=context(128))
    assert np.abs(moved["ref"] - base).max() > 0.1


def test_a_val_patch_sees_train_pixels_and_never_test_ones(cube, tmp_path) -> None:
    """The splits nest (``ReferenceContext.foreign``): a val patch's fit takes the train
    pixels around it, as inference takes every clear pixel, but no test pixel."""
    path, _ = cube
    index = build_patch_index(
        xr.open_zarr(path)["cube"], SAR, OPT, SPEC, input_set="SC", cloudy_bands=CLOUDY
    )
    rows = index[index["split"] == "val"]
    base = read_patches(path, rows, **KW, reference_context=context(128))["ref"]
    _edit_cloudy(path, tmp_path / "test.zarr", split_pixels(SIZE, SIZE, SPEC, "test"))
    same = read_patches(tmp_path / "test.zarr", rows, **KW, reference_context=context(128))
    np.testing.assert_array_equal(same["ref"], base)
    _edit_cloudy(path, tmp_path / "train.zarr", split_pixels(SIZE, SIZE, SPEC, "train"))
    moved = read_patches(tmp_path / "train.zarr", rows, **KW, reference_context=context(128))
    assert len(rows) > 0 and np.abs(moved["ref"] - base).max() > 0.1


def test_a_donor_dates_clouds_hide_the_whole_window(cube, tmp_path) -> None:
    """A patch that gets another date's cloud mask gets it over its whole context, as a real
    cloud hides the land around the patch too: the same-date S2 under both cloudy dates'
    masks (1 and 3) never shapes the reference of a clear date's patch laid with either;
    the same edit where neither masks does."""
    path, rows = cube
    masks = CloudMasks(seed=0, rate=1.0)
    rows = rows[rows["time"] % 2 == 0]
    donor = masks.donors(rows["time"], rows["row"], rows["col"], 4)
    rows = rows[donor % 2 == 1]  # a cloudy donor date
    mask = xr.open_zarr(path)["cube"].sel(band=CLOUDY[-1]).values > 0.5
    both = mask[1] & mask[3]
    kw = {**KW, "cloud_masks": masks, "reference_context": context(128)}
    base = read_patches(path, rows, **kw)["ref"]
    _edit_cloudy(path, tmp_path / "hidden.zarr", both)
    same = read_patches(tmp_path / "hidden.zarr", rows, **kw)["ref"]
    np.testing.assert_array_equal(same, base)
    _edit_cloudy(path, tmp_path / "seen.zarr", ~(mask[1] | mask[3]))
    moved = read_patches(tmp_path / "seen.zarr", rows, **kw)["ref"]
    assert len(rows) > 5 and both.mean() > 0.05 and np.abs(moved - base).max() > 0.1


def test_the_context_defaults_to_the_inference_tile_for_a_scene_fit_only() -> None:
    fit = ["model.input_set=SC", "model.reference=scene_fit", "infer.tile_px=128"]
    assert reference_context_px(load_config(None, fit)) == 128
    assert reference_context_px(load_config(None, [*fit, "train.reference_context_px=0"])) == 0
    prior = ["model.input_set=SO", "model.reference=prior"]
    assert reference_context_px(load_config(None, prior)) == 0
