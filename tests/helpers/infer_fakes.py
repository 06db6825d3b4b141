"""Shared by the inference and analysis tests: an in-memory SAR scene and readers over it, a
tiny net, and a plain mosaic writer (an in-memory array as a Zarr v3 store, CRS and coords).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec
from sar2opt.infer.store import OPTICAL_VAR, time_coords

NORM = {"sar_mean": [-12.0, -19.0], "sar_std": [3.0, 4.0], "opt_mean": [0.05], "opt_std": [0.02]}
META = {"in_bands": ["vv", "vh"], "out_bands": ["B04"], "norm": NORM, "model": {}}
H, W = 200, 300
GRID = GridSpec(32633, 10.0, (500_000.0, 4_000_000.0, 500_000.0 + 10 * W, 4_000_000.0 + 10 * H))
RF = 2  # receptive-field radius of tiny_net (two 3x3 convs)


def fake_sar(t: int) -> np.ndarray:
    """Smooth VV/VH (dB) on GRID, different at every acquisition ``t``."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack(
        [-12 + 3 * np.sin(xx / 9 + t) * np.cos(yy / 13), -19 + 3 * np.cos(xx / 11 - t)]
    ).astype(np.float32)


def tiny_net() -> torch.nn.Module:
    """The same small generator every call (seeded): outputs comparable across processes."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)
    ).eval()


@dataclass(frozen=True)
class FakeSar:
    """A ``run.SarSource`` over the in-memory SAR of ``fake_sar`` (``delay_s`` per read)."""

    delay_s: float = 0.0

    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        r, c, h, w = window
        time.sleep(self.delay_s)
        return fake_sar(t)[:, r : r + h, c : c + w]


@dataclass(frozen=True)
class HoleySar(FakeSar):
    """``FakeSar`` with a gap (NaN) in the top-left 4 x 4 px of every window read: where a
    pixel has no SAR."""

    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        a = super().read(t, window).copy()
        a[:, :4, :4] = np.nan
        return a


@dataclass(frozen=True)
class FailingSar:
    """A ``run.SarSource`` whose every read fails as an unreachable asset does."""

    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        raise CatalogError("asset https://example/x.tif is unreachable")


def write_mosaic(
    path: str | Path,
    data: np.ndarray,
    grid: GridSpec,
    times: Sequence[str],
    bands: Sequence[str],
    attrs: Mapping | None = None,
) -> Path:
    """``data`` (time, band, y, x) as a one-variable mosaic (``optical``) at ``path``: what
    ``sar2opt.analysis`` reads, with any bands (quality layers as bands too)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    da = xr.DataArray(
        np.asarray(data, np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": time_coords(times),
            "band": np.array([str(b) for b in bands], dtype=object),
            "y": grid.ys(),
            "x": grid.xs(),
        },
        name=OPTICAL_VAR,
    )
    ds = da.to_dataset().rio.write_crs(f"EPSG:{grid.epsg}").rio.write_transform(grid.transform)
    ds.attrs.update(dict(attrs or {}))
    ds[OPTICAL_VAR].encoding["coordinates"] = "spatial_ref"  # .rio.crs on plain open_zarr
    with warnings.catch_warnings():  # consolidated metadata is a v3 extension: fast opens
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=True)
    return Path(path)
