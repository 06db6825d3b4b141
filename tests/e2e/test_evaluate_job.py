"""jobs/evaluate.py end to end on a tiny cube + checkpoint: report parses, images decode."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_cube(path: Path) -> None:
    from sar2opt.cube.build import cube_dataarray
    from sar2opt.grid import GridSpec

    rng = np.random.default_rng(0)
    grid = GridSpec(32721, 10.0, (698700.0, 9514000.0, 699340.0, 9514640.0))  # 64 x 64
    t, h, w = 2, 64, 64
    vv = rng.uniform(-14, -6, (t, h, w))
    vh = vv - 7 + rng.normal(0, 0.5, (t, h, w))
    opt = np.stack([0.15 + 0.01 * vv, 0.2 + 0.005 * vh, 0.12 + 0.006 * vv], axis=1)
    clear = np.ones((t, 1, h, w))
    clear[0, 0, :10, :10] = 0
    data = np.concatenate([vv[:, None], vh[:, None], opt, clear], axis=1)
    times = np.array(["2023-07-01T10:00", "2023-07-13T10:00"], dtype="datetime64[ns]")
    da = cube_dataarray(
        data.astype("float32"), grid, times, ["vv", "vh", "B02", "B03", "B04", "clear"]
    )
    ds = da.to_dataset(name="cube")
    ds.attrs.update({"sar_bands": ["vv", "vh"], "opt_bands": ["B02", "B03", "B04"]})
    ds.to_zarr(path, mode="w")


def _write_checkpoint(d: Path) -> None:
    import torch

    from sar2opt.config import ModelSpec, config_to_dict, load_config
    from sar2opt.models import build_generator
    from sar2opt.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec(ngf=4, depth=3)
    # 2 x 2 split blocks of 32 px on the 64 px cube: 1 test, 1 val, 2 train
    cfg = load_config(
        None,
        ["patches.patch_px=16", "patches.block_px=32", "patches.val_frac=0.25",
         "patches.test_frac=0.25"],
    )  # fmt: skip
    meta = {
        "model": config_to_dict(spec),
        "in_bands": ["vv", "vh"],
        "out_bands": ["B02", "B03", "B04"],
        "norm": {
            "sar_mean": [-10.0, -17.0],
            "sar_std": [2.3, 2.4],
            "opt_mean": [0.05, 0.11, 0.06],
            "opt_std": [0.02, 0.01, 0.01],
        },  # fmt: skip
        "config": config_to_dict(cfg),
        "epoch": 2,
    }
    save_checkpoint(d, build_generator(spec, 2, 3), meta)
    (d.parent / "metrics.csv").write_text(
        "epoch,d_loss,g_adv,g_l1,g_total,val_l1,val_mae_refl,samples_per_s,epoch_s\n"
        "1,0.7,0.8,0.9,90,1.0,0.02,10,1\n2,0.6,0.8,0.7,70,0.9,0.015,10,1\n"
    )


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def _run(args):
    return subprocess.run(
        [sys.executable, "jobs/evaluate.py", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    _write_cube(root / "cube.zarr")
    _write_checkpoint(root / "train" / "checkpoint")
    return root


def test_evaluate_writes_report_with_decodable_images(inputs):
    out = inputs / "eval"
    r = _run(
        ["--cube", inputs / "cube.zarr", "--checkpoint", inputs / "train" / "checkpoint",
         "--out", out, "--block-px", "16", "--buffer-px", "2", "--residual-steps", "2",
         "--residual-ngf", "4"]
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    summ = scores["summary"]
    assert scores["seeds"] == [0, 1, 2]
    # reflectance is linear in the SAR here: the ridge fit is near perfect, the mean is not
    assert summ["ridge per date (baseline)"]["mae"][0] < 1e-3
    assert summ["mean colour per date (baseline)"]["mae"][0] > 5e-3
    assert any(k.startswith("checkpoint") for k in summ)
    text = (out / "report.html").read_text()
    p = _Imgs()
    p.feed(text)
    assert len(p.srcs) == 3  # tiles, metric maps, training curves
    for src in p.srcs:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:80]
        assert base64.b64decode(m.group(1), validate=True).startswith(PNG_MAGIC)
    assert "FID not computed" in text and "± " in text
    assert "never trained on" in text  # held-out blocks restricted to the unseen test block


def test_evaluate_bad_input_one_error_line(inputs, tmp_path):
    r = _run(["--cube", tmp_path / "nope.zarr", "--out", tmp_path / "o"])
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errs) == 1 and "cube not found" in errs[0]
    r = _run(["--cube", inputs / "cube.zarr", "--out", tmp_path / "o", "--block-px", "128"])
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errs) == 1 and "smaller than one 128 px block" in errs[0]
    assert not (tmp_path / "o" / "report.html").exists()
