"""Quicklook PNG: panels, size, NaN tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from sar2opt.evaluate.quicklook import write_quicklook

BANDS = ["B02", "B03", "B04", "B08"]


def _scene(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    field = np.sin(xx / 15) * np.cos(yy / 11)
    sar = np.stack([-12 + 3 * field, -19 + 2 * field]) + rng.normal(0, 0.7, (2, h, w))
    truth = np.stack([0.04 + 0.02 * k + 0.03 * field for k in range(4)])
    pred = truth + rng.normal(0, 0.01, truth.shape)
    sar[:, :8, :8] = np.nan
    pred[:, :8, :8] = np.nan
    return sar.astype(np.float32), pred.astype(np.float32), truth.astype(np.float32)


def test_quicklook_four_panels(tmp_path) -> None:
    sar, pred, truth = _scene()
    out = write_quicklook(
        tmp_path / "sub" / "q.png", sar, pred, truth, BANDS, title="tile 3",
        sar_time="2023-07-03T05:43:12Z", truth_time="2023-07-05T10:00:31Z",
    )  # fmt: skip
    assert out.is_file()
    img = imread(out)
    assert img.shape[:2] == (460, 1600)  # (4 + 0.6) in x 100 dpi, 4 panels x 4 in
    assert img[..., :3].std() > 0.05  # not blank


def test_quicklook_without_truth_two_panels(tmp_path) -> None:
    sar, pred, _ = _scene()
    out = write_quicklook(tmp_path / "q.png", sar, pred, None, BANDS, dpi=50)
    assert imread(out).shape[:2] == (230, 400)


def test_quicklook_needs_rgb_bands(tmp_path) -> None:
    sar, pred, truth = _scene()
    with pytest.raises(ValueError, match="B04"):
        write_quicklook(tmp_path / "q.png", sar, pred[:2], truth[:2], ["B02", "B08"])
