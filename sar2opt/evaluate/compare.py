"""Score a mosaic against the clear optical pixels of a cube on the same grid, beside a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from sar2opt.config import PatchSpec
from sar2opt.data.index import split_pixels
from sar2opt.evaluate.metrics import constant_baseline, score_table
from sar2opt.infer.store import OPTICAL_VAR


def compare_mosaic_to_cube(
    mosaic_path: str | Path,
    cube_path: str | Path,
    mean_colour: list[float],
    patches: PatchSpec,
    split: str = "test",
) -> dict:
    """Rows of MAE/RMSE/PSNR for the model and the constant train-mean colour.

    Scored on the pixels of the ``split`` blocks of the training patch index (``patches``:
    the spec the checkpoint was trained with, so no scored pixel was seen in training) where
    the cube has a clear S2 observation, for every time step the mosaic and the cube share.
    """
    mosaic = xr.open_zarr(mosaic_path, consolidated=False)  # no consolidated metadata
    cube = xr.open_zarr(cube_path)["cube"]
    # a mosaic store's image by name (``infer.store``); any other store: its first variable
    pred_da = mosaic[OPTICAL_VAR if OPTICAL_VAR in mosaic else list(mosaic.data_vars)[0]]
    opt_bands = list(pred_da.band.values)
    cube = cube.sel(x=pred_da.x, y=pred_da.y, method="nearest", tolerance=1e-3)
    times = np.intersect1d(pred_da.time.values, cube.time.values)
    if len(times) == 0:
        raise ValueError("mosaic and cube share no time step")
    full = xr.open_zarr(cube_path)["cube"]
    held = xr.DataArray(
        split_pixels(full.sizes["y"], full.sizes["x"], patches, split),
        coords={"y": full.y, "x": full.x},
        dims=("y", "x"),
    ).sel(x=pred_da.x, y=pred_da.y, method="nearest", tolerance=1e-3)
    if not held.values.any():
        raise ValueError(f"no {split} block inside the mosaic")
    pred = pred_da.sel(time=times).values.astype("float32")
    truth = cube.sel(time=times, band=opt_bands).values
    clear = (cube.sel(time=times, band="clear").values > 0.5) & held.values
    # (time, band, y, x) -> (band, time*y, x) so the metrics see one big image
    p = np.moveaxis(pred, 1, 0).reshape(len(opt_bands), -1, pred.shape[-1])
    t = np.moveaxis(truth, 1, 0).reshape(len(opt_bands), -1, truth.shape[-1])
    m = clear.reshape(-1, clear.shape[-1])
    rows = score_table(
        {"model": p, "baseline: train mean colour": constant_baseline(mean_colour, t)}, t, m
    )
    return {"rows": rows, "times": [str(x)[:10] for x in times], "bands": opt_bands}
