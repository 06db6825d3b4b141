"""jobs/evaluate.py end to end on a tiny cube + checkpoints: report parses, images decode, SSIM
beside MAE, per-class scores of a warped label raster, the downstream check and best-of-N;
an SO checkpoint reads the prior, an SCO one is scored under laid clouds, a missing input
band is one error line; a cube built from the synthetic STAC API with a DEM, scored per
slope class."""

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


#: The cube's prior and same-date S2 rule, recorded in the cube and in the checkpoints.
CUBE_SPEC = {"prior_days": 30.0, "cloudy": True}


def _write_cube(path: Path) -> None:
    """2 dates, 64 x 64 px, B02 B03 B04 linear in the SAR; date 0 cloudy on rows 0-11 of
    every 32 px block (its ``cloud_mask``, and not ``clear``); a prior (truth + 0.01, none on
    columns 0-7) and the same-date S2 (0.5 under the clouds)."""
    from sar2opt.config import CubeSpec, config_to_dict
    from sar2opt.cube.build import cube_dataarray
    from sar2opt.grid import GridSpec

    rng = np.random.default_rng(0)
    grid = GridSpec(32721, 10.0, (698700.0, 9514000.0, 699340.0, 9514640.0))  # 64 x 64
    t, h, w = 2, 64, 64
    vv = rng.uniform(-14, -6, (t, h, w))
    vh = vv - 7 + rng.normal(0, 0.5, (t, h, w))
    opt = np.stack([0.15 + 0.01 * vv, 0.2 + 0.005 * vh, 0.12 + 0.006 * vv], axis=1)
    cloud = np.zeros((t, 1, h, w))
    cloud[0, 0, np.arange(h) % 32 < 12] = 1
    prior = opt + 0.01
    prior[..., :8] = np.nan
    cloudy = np.where(cloud > 0, 0.5, opt)
    data = np.concatenate([vv[:, None], vh[:, None], opt, 1 - cloud, prior, cloudy, cloud], 1)
    times = np.array(["2023-07-01T10:00", "2023-07-13T10:00"], dtype="datetime64[ns]")
    opt_bands = ["B02", "B03", "B04"]
    names = ["vv", "vh", *opt_bands, "clear", *(f"prior_{b}" for b in opt_bands)]
    names += [*(f"cloudy_{b}" for b in opt_bands), "cloud_mask"]
    da = cube_dataarray(data.astype("float32"), grid, times, names)
    ds = da.to_dataset(name="cube")
    ds.attrs.update(
        {
            "sar_bands": ["vv", "vh"],
            "opt_bands": opt_bands,
            "cube_spec": config_to_dict(CubeSpec(**CUBE_SPEC)),
            "grid": grid.to_dict(),
        }
    )
    ds.to_zarr(path, mode="w")


def _write_labels(path: Path) -> None:
    """Classes 0 / 1 / 2 on 20 m pixels in EPSG:4326-free UTM 21S, over the cube's grid
    shifted 1 cube pixel east: class = column band of 7 label pixels (140 m)."""
    import rasterio

    from sar2opt.grid import GridSpec

    grid = GridSpec(32721, 20.0, (698720.0, 9514000.0, 699360.0, 9514640.0))  # 32 x 32
    a = np.minimum(np.arange(grid.width) // 11, 2)[None].repeat(grid.height, 0).astype("uint8")
    with rasterio.open(
        path, "w", driver="GTiff", height=grid.height, width=grid.width, count=1,
        dtype="uint8", crs=grid.crs, transform=grid.transform,
    ) as dst:  # fmt: skip
        dst.write(a, 1)


def _write_checkpoint(d: Path, input_set: str = "S", cube_spec: dict = CUBE_SPEC) -> None:
    """An untrained U-Net of ``input_set`` with the metadata training writes; ``cube_spec``:
    its training cube's settings."""
    import torch

    from sar2opt.config import CubeSpec, ModelSpec, config_to_dict, load_config
    from sar2opt.data.inputs import input_channels, uses_cloudy, uses_dem, uses_prior
    from sar2opt.models import build_generator
    from sar2opt.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec(ngf=4, depth=3, input_set=input_set)
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
    if input_set != "S":
        out = meta["out_bands"]
        aux = (
            {"cloudy": [*(f"cloudy_{b}" for b in out), "cloud_mask"]}
            if uses_cloudy(input_set)
            else {}
        )
        if uses_prior(input_set):
            aux["prior"] = [f"prior_{b}" for b in out]
        if uses_dem(input_set):
            aux["dem"] = ["dem"]
            meta["norm"] |= {"dem_mean": [150.0], "dem_std": [50.0]}
        meta |= {
            "input_set": input_set,
            "aux_bands": aux,
            "cube_spec": config_to_dict(CubeSpec(**cube_spec)),
        }
    in_ch, dem_ch = input_channels(input_set, 2, 3)
    save_checkpoint(d, build_generator(spec, in_ch, 3, dem_ch), meta)
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
    _write_labels(root / "labels.tif")
    _write_checkpoint(root / "train" / "checkpoint")
    for input_set in ("SO", "SCO", "SD"):
        _write_checkpoint(root / input_set.lower() / "checkpoint", input_set)
    _write_checkpoint(root / "so60" / "checkpoint", "SO", CUBE_SPEC | {"prior_days": 60.0})
    return root


def test_evaluate_writes_report_with_decodable_images(inputs):
    out = inputs / "eval"
    r = _run(
        ["--cube", inputs / "cube.zarr", "--checkpoint", inputs / "train" / "checkpoint",
         "--out", out, "--block-px", "16", "--buffer-px", "2", "--residual-steps", "2",
         "--residual-ngf", "4", "--labels", inputs / "labels.tif"]
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
    assert len(p.srcs) == 4  # tiles, metric maps, reliability (2 flips), training curves
    for src in p.srcs:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:80]
        assert base64.b64decode(m.group(1), validate=True).startswith(PNG_MAGIC)
    assert "FID not computed" in text and "± " in text
    assert "never trained on" in text  # held-out blocks restricted to the unseen test block
    assert scores["mode"] == "blocks" and scores["bands"] == ["B02", "B03", "B04"]
    # the prior exists except on columns 0-7: copy-prior is scored on fewer pixels, said so
    cov = scores["coverage"]["copy the prior clear pixel (baseline)"]
    assert 0 < cov < 1 and cov == pytest.approx(
        summ["copy the prior clear pixel (baseline)"]["pixels"][0]
        / summ["ridge per date (baseline)"]["pixels"][0]
    )
    assert summ["copy the prior clear pixel (baseline)"]["mae"][0] == pytest.approx(0.01, 1e-3)
    assert "Reliability of the stated uncertainty" in text and "<th>coverage</th>" in text
    (rel,) = scores["reliability"].values()  # the checkpoint's 2 flips state an uncertainty
    assert len(rel) == 10 and all(r["count"] > 0 and r["stated"] >= 0 for r in rel)
    assert "seed 2" in r.stderr and re.search(r"\[\s*[0-9.]+ s\] seed 0 ", r.stderr)
    # SSIM beside MAE for every method, and whether it reaches the ridge's
    ridge = summ["ridge per date (baseline)"]
    assert ridge["ssim"][0] > summ["mean colour per date (baseline)"]["ssim"][0]
    assert "SSIM ≥ ridge" in r.stdout and "SSIM ≥ ridge per date (baseline)" in text
    mean_row = next(ln for ln in r.stdout.splitlines() if ln.startswith("mean colour per"))
    assert mean_row.split()[-3] == "no"  # its SSIM is below the ridge's
    # per class: the labels cover columns 2-63 (column 0-1 unlabelled), 3 column bands
    (ck,) = [k for k in summ if k.startswith("checkpoint")]
    regions = scores["regions"][ck]
    assert set(regions) == {"class 0", "class 1", "class 2"}
    px = sum(v["pixels"][0] for v in regions.values())
    assert 0 < px <= summ[ck]["pixels"][0]
    assert all(np.isfinite(v["mae"][0]) for v in regions.values() if v["pixels"][0] > 0)
    assert "Per class of the label raster" in text and "warped through its georeference" in text
    # the downstream check: a random forest on real S2 against each method's S2
    acc = scores["downstream"]
    assert {"real S2", "majority class", ck} <= set(acc)
    assert all(0.0 <= v["accuracy"][0] <= 1.0 for v in acc.values())
    assert "random forest" in text
    # the checkpoint's 2 flips are 2 candidates: best-of-N beside the single output
    assert summ[ck]["n_candidates"][0] == 2
    # (the best candidate may still err more than their mean: MAE is convex)
    assert 0 < summ[ck]["best_of_n"][0] < 2 * summ[ck]["mae_per_image"][0]
    assert "best-of-2" in r.stdout and "MultiEarth best-of-N" in text


def _ckpt_run(inputs, name, out, *more):
    return _run(
        ["--cube", inputs / "cube.zarr", "--checkpoint", inputs / name / "checkpoint",
         "--out", out, "--block-px", "16", "--buffer-px", "2", "--residual-steps", "0",
         "--seeds", "0", *more]
    )  # fmt: skip


def test_evaluate_so_checkpoint_reads_the_prior_on_chosen_bands(inputs):
    out = inputs / "eval_so"
    r = _ckpt_run(inputs, "so", out, "--bands", "B04", "B02", "--flips", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    (name,) = [k for k in scores["summary"] if k.startswith("checkpoint")]
    assert " SO " in name and scores["bands"] == ["B04", "B02"]
    assert scores["reliability"] == {}  # one hypothesis: no uncertainty stated
    assert np.isfinite(scores["summary"][name]["mae"][0])
    text = (out / "report.html").read_text()
    assert "bands scored: B04, B02" in text and "prior (input set SO)" in text


def test_evaluate_cloud_removal_checkpoint_scored_under_laid_clouds(inputs):
    out = inputs / "eval_sco"
    r = _ckpt_run(inputs, "sco", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mode"] == "cloud removal"
    assert scores["laid_clouds"] == [{"1": 0}]  # date 0's clouds on the clear date 1
    summ = scores["summary"]
    # only rows 0-11 of each 32 px block, of date 1, inside the checkpoint's test block
    px = summ["ridge per date (baseline)"]["pixels"][0]
    assert 0 < px <= 12 * 32 and all(
        v["pixels"][0] == px for k, v in summ.items() if "prior" not in k
    )
    assert "laid on clear dates" in (out / "report.html").read_text()


def test_evaluate_unsupplied_input_one_error_line(inputs, tmp_path, capsys):
    from tests.helpers.jobs import error_line, load_job

    job = load_job("evaluate")
    for name, want in (
        ("sd", "reads dem band(s) dem, which the cube lacks: build it with --set "
         "catalog.dem_collection=cop-dem-glo-30"),
        ("so60", "made with cube.prior_days=30.0, the checkpoint's training cube with "
         "cube.prior_days=60.0: rebuild the cube with --set cube.prior_days=60.0"),
    ):  # fmt: skip
        args = ["--cube", inputs / "cube.zarr", "--checkpoint", inputs / name / "checkpoint"]
        code = job.main(job.parse_args([*map(str, args), "--out", str(tmp_path / name)]))
        assert code == 2 and want in error_line(capsys), name
        assert not (tmp_path / name / "report.html").exists()


def test_evaluate_bad_input_one_error_line(inputs, tmp_path):
    r = _run(["--cube", tmp_path / "nope.zarr", "--out", tmp_path / "o"])
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errs) == 1 and "cube not found" in errs[0]
    r = _run(["--cube", inputs / "cube.zarr", "--out", tmp_path / "o", "--block-px", "128"])
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errs) == 1 and "smaller than one 128 px block" in errs[0]
    r = _run(["--cube", inputs / "cube.zarr", "--out", tmp_path / "o", "--cloud-removal",
              "--cloud-masks-from", tmp_path / "lender.zarr"])  # fmt: skip
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errs) == 1 and "--cloud-masks-from: cube not found" in errs[0]
    assert not (tmp_path / "o" / "report.html").exists()


def test_evaluate_builds_its_cube_from_the_stac_api_and_scores_per_slope(syn_catalog, tiny_ckpt):
    """No --cube: the cube of the AOI and dates is built through the cube stage's builder with
    the checkpoint's settings and ``--set`` (a DEM here) into --out/cube.zarr, then scored,
    per slope class too."""
    from tests.helpers.jobs import SMALL_AOI, SYN_DATES, write_json

    root = syn_catalog["root"] / "evaluate_stac"
    root.mkdir(exist_ok=True)
    aoi = write_json(root / "aoi.geojson", SMALL_AOI)
    out = root / "eval"
    r = _run(
        ["--stac-url", syn_catalog["url"], "--aoi", aoi, "--start", SYN_DATES[0],
         "--end", SYN_DATES[1], "--checkpoint", tiny_ckpt, "--out", out,
         "--set", "catalog.dem_collection=cop-dem-glo-30", "--seeds", "0",
         "--residual-steps", "0", "--block-px", "16"]
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import xarray as xr

    cube = xr.open_zarr(out / "cube.zarr")
    assert "dem" in [str(b) for b in cube["cube"].band.values] and cube.sizes["time"] == 4
    assert "building the cube of" in r.stderr
    scores = json.loads((out / "scores.json").read_text())
    summ = scores["summary"]
    slopes = scores["regions"]["ridge per date (baseline)"]
    assert list(slopes) == ["slope flat <2°", "slope gentle 2-10°", "slope steep >10°"]
    px = sum(v["pixels"][0] for v in slopes.values())
    assert px == summ["ridge per date (baseline)"]["pixels"][0]  # every scored px has a slope
    text = (out / "report.html").read_text()
    assert "per slope" in r.stdout and "Per terrain slope (DEM)" in text
