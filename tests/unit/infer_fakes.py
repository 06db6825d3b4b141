"""An in-memory SAR scene, a tiny net and a strip reader over them, shared by the inference
pipeline tests (tests/unit/test_infer_job.py, test_infer_resume.py)."""

from __future__ import annotations

import time

import numpy as np
import torch

from sar2opt.grid import GridSpec
from sar2opt.infer.plan import BlockLattice
from sar2opt.infer.run import split_strip, strip_window

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


def fake_read(strip: dict, *, lattice: dict, delay_s: float = 0.0) -> list[dict]:
    """A strip reader (as ``read_sar_strip``) over the in-memory SAR of ``fake_sar``."""
    lat = BlockLattice.from_dict(lattice)
    r, c, h, w = strip_window(lat, int(strip["bi"]), strip["bjs"])
    time.sleep(delay_s * len(strip["bjs"]))
    return split_strip(strip, lat, fake_sar(int(strip["t"]))[:, r : r + h, c : c + w])
