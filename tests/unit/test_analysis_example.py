"""examples/analysis.py runs on a small RGB-only mosaic and reports the clearing it holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from sar2opt.grid import GridSpec
from tests.helpers.infer_fakes import write_mosaic

REPO = Path(__file__).resolve().parents[2]


def test_example_script(tmp_path):
    grid = GridSpec(32721, 10.0, (698700.0, 9514000.0, 698900.0, 9514200.0))  # 20 x 20 px
    data = np.zeros((2, 3, 20, 20), "float32")
    data[:, 0], data[:, 1], data[:, 2] = 0.02, 0.05, 0.03  # B02 B03 B04 forest
    data[1, 2, :5, :5] = 0.09  # a 5 x 5 clearing at t1: red up, GLI down
    data[1, 0, :5, :5] = 0.06
    times = ["2023-07-01T10:00:00Z", "2023-08-01T10:00:00Z"]
    m = write_mosaic(tmp_path / "m.zarr", data, grid, times, ["B02", "B03", "B04"])
    r = subprocess.run(
        [sys.executable, "examples/analysis.py", str(m), "--out", str(tmp_path / "a")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "gli fell by >= 0.1 from 2023-07-01 to 2023-08-01 on 25 of 400 pixels" in r.stdout
    assert imread(tmp_path / "a" / "gli_change.png").shape[0] > 100
