"""Bad input: one clear line on stderr, exit code 2, and no output left behind."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import SYN_AOI, one_error_line, run_job, syn_args, write_json

OUTSIDE = {  # a polygon in Africa, far from every catalog of ours
    "type": "Polygon",
    "coordinates": [[[20.0, 0.0], [20.1, 0.0], [20.1, 0.1], [20.0, 0.1], [20.0, 0.0]]],
}


def _cases(tmp_path, url):
    bad_json = write_json(tmp_path / "bad.geojson", "{ not json")
    outside = write_json(tmp_path / "outside.geojson", OUTSIDE)
    return {
        "missing AOI": (tmp_path / "nope.geojson", "2023-07-01", "2023-08-31", url, "not found"),
        "invalid GeoJSON": (bad_json, "2023-07-01", "2023-08-31", url, "not valid JSON"),
        "AOI not covered": (outside, "2023-07-01", "2023-08-31", url, "no Sentinel-1"),
        "no S1 in dates": (SYN_AOI, "2015-01-01", "2015-02-01", url, "no Sentinel-1"),
        "unreachable catalog": (
            SYN_AOI,
            "2023-07-01",
            "2023-08-31",
            "http://127.0.0.1:9",
            "unreachable",
        ),
    }


CASES = [
    "missing AOI",
    "invalid GeoJSON",
    "AOI not covered",
    "no S1 in dates",
    "unreachable catalog",
]


@pytest.mark.parametrize("case", CASES)
def test_build_cube_bad_input(case, tmp_path, syn_catalog):
    aoi, start, end, url, expected = _cases(tmp_path, syn_catalog["url"])[case]
    out = tmp_path / "cube.zarr"
    r = run_job(
        [
            "jobs/build_cube.py",
            *syn_args(url, aoi=aoi, start=start, end=end, config=None),
            "--out",
            out,
        ],
        timeout=300,
    )
    assert expected in one_error_line(r)
    assert not out.exists() and not list(tmp_path.glob(".cube.zarr*"))


@pytest.mark.parametrize("case", CASES)
def test_infer_region_bad_input(case, tmp_path, syn_catalog, tiny_ckpt):
    aoi, start, end, url, expected = _cases(tmp_path, syn_catalog["url"])[case]
    out = tmp_path / "mosaic.zarr"
    r = run_job(
        [
            "jobs/infer_region.py",
            *syn_args(url, aoi=aoi, start=start, end=end, config=None),
            "--checkpoint",
            tiny_ckpt,
            "--out",
            out,
        ],
        timeout=300,
    )
    assert expected in one_error_line(r)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "mosaic" in p.name]


def test_infer_region_missing_checkpoint(tmp_path, syn_catalog):
    out = tmp_path / "mosaic.zarr"
    r = run_job(
        [
            "jobs/infer_region.py",
            *syn_args(syn_catalog["url"], config=None),
            "--checkpoint",
            tmp_path / "none",
            "--out",
            out,
        ],
        timeout=300,
    )
    assert "checkpoint" in one_error_line(r)
    assert not out.exists()


def test_unknown_config_key_is_rejected(tmp_path, syn_catalog):
    r = run_job(
        [
            "jobs/build_cube.py",
            *syn_args(syn_catalog["url"], config=None),
            "--out",
            tmp_path / "c.zarr",
            "--set",
            "cube.res=20",
        ],
        timeout=300,
    )
    assert "unknown key" in one_error_line(r)


@pytest.mark.parametrize("job", ["build_cube", "infer_region", "train"])
def test_output_cannot_escape_the_output_root(job, tmp_path, syn_catalog, tiny_ckpt):
    import os

    root = tmp_path / "root"
    root.mkdir()
    env = os.environ | {"SAR2OPT_OUTPUT_ROOT": str(root)}
    common = syn_args(syn_catalog["url"], config=None)
    args = {
        "build_cube": ["jobs/build_cube.py", *common, "--out", "../escaped.zarr"],
        "infer_region": [
            "jobs/infer_region.py",
            *common,
            "--checkpoint",
            tiny_ckpt,
            "--out",
            "../escaped.zarr",
        ],
        "train": ["jobs/train.py", "--cube", tmp_path, "--out", "../escaped"],
    }[job]
    r = run_job(args, timeout=300, env=env)
    assert "outside the output root" in one_error_line(r)
    assert not list(tmp_path.glob("escaped*"))
