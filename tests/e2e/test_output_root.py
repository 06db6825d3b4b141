"""Every entry point that writes or deletes stays inside $SAR2OPT_OUTPUT_ROOT, and replaces
only what sar2opt wrote.

Containment: with the root set, ``..`` out of it and a symlink inside it that points outside
are both refused, by every job and CLI command that writes, with one line and exit 2, and
nothing is created outside. Ownership: ``--overwrite`` (and the demo, which replaces its
folder on every run) never replaces a user's folder. Every case fails before any real work
(no catalog, no Ray), so the file runs in seconds per case.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.jobs import SYN_AOI, one_error_line, run_job, syn_args

pytestmark = pytest.mark.slow

NOBODY = "http://127.0.0.1:9"  # nothing listens: these cases must fail before any search


def _entry_points(cube: Path, ckpt: Path) -> dict:
    """Each entry point's command with ``OUT`` where its output path goes."""
    common = syn_args(NOBODY, config=None)
    return {
        "build_cube --out": ["jobs/build_cube.py", *common, "--out", "OUT"],
        "infer_region --out": ["jobs/infer_region.py", *common, "--checkpoint", ckpt,
                               "--out", "OUT"],
        "monitor --store": ["jobs/monitor.py", "--aoi", SYN_AOI, "--checkpoint", ckpt,
                            "--store", "OUT", "--stac-url", NOBODY],
        "train --out": ["jobs/train.py", "--cube", cube, "--out", "OUT"],
        "train --storage": ["jobs/train.py", "--cube", cube, "--out", "train",
                            "--storage", "OUT"],
        "evaluate --out": ["jobs/evaluate.py", "--cube", cube, "--out", "OUT"],
        "demo --out": ["jobs/demo.py", "--out", "OUT"],
        "sar2opt catalog synth --out": ["-m", "sar2opt.cli", "catalog", "synth", "--out", "OUT"],
        "sar2opt catalog multiearth --out": ["-m", "sar2opt.cli", "catalog", "multiearth",
                                             cube, "--out", "OUT"],
        "sar2opt catalog ingest --out": ["-m", "sar2opt.cli", "catalog", "ingest", cube,
                                         "--manifest", cube, "--out", "OUT"],
        "sar2opt catalog ssl4eo --out": ["-m", "sar2opt.cli", "catalog", "ssl4eo", cube,
                                         "--out", "OUT"],
        "sar2opt catalog biomassters --out": ["-m", "sar2opt.cli", "catalog", "biomassters",
                                              cube, "--out", "OUT"],
        "sar2opt synth --out": ["-m", "sar2opt.cli", "synth", "--bbox", "-51", "-3", "-50.99",
                                "-2.99", "--start", "2023-07-01", "--end", "2023-07-13",
                                "--out", "OUT"],
        "sar2opt export cog --out": ["-m", "sar2opt.cli", "export", "cog", cube, "--out", "OUT"],
    }  # fmt: skip


ENTRY_POINTS = list(_entry_points(Path("c"), Path("k")))


@pytest.fixture
def root(tmp_path):
    """An output root holding ``link``, a symlink to the folder ``outside`` beside it."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return root


@pytest.mark.parametrize("escape", ["../escaped", "link/escaped"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_output_cannot_escape_the_output_root(entry, escape, root, tmp_path, tiny_ckpt):
    cube = tmp_path / "cube.zarr"  # need not exist: the output is checked first
    args = [str(a).replace("OUT", escape) for a in _entry_points(cube, tiny_ckpt)[entry]]
    env = os.environ | {"SAR2OPT_OUTPUT_ROOT": str(root)}
    r = run_job(args, timeout=300, env=env)
    line = one_error_line(r)
    assert f"output {escape} is outside the output root {root}" in line, line
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("escaped*")), "written beside the root"
    assert not list((tmp_path / "outside").iterdir()), "written through the symlink"
    assert sorted(p.name for p in root.iterdir()) == ["link"], "something was left in the root"


def _user_folder(path: Path) -> dict:
    path.mkdir(parents=True)
    files = {"thesis.tex": "my thesis", "data/field.csv": "1,2,3"}
    for name, text in files.items():
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(text)
    return files


def _untouched(path: Path, files: dict) -> None:
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == sorted(files)
    for name, text in files.items():
        assert (path / name).read_text() == text


@pytest.mark.parametrize("job", ["build_cube", "infer_region", "demo"])
def test_overwrite_never_replaces_a_users_folder(job, tmp_path, syn_catalog, tiny_ckpt):
    out = tmp_path / "mine"
    files = _user_folder(out)
    common = syn_args(syn_catalog["url"])
    args = {
        "build_cube": ["jobs/build_cube.py", *common, "--out", out, "--overwrite"],
        "infer_region": ["jobs/infer_region.py", *common, "--checkpoint", tiny_ckpt,
                         "--out", out, "--overwrite"],
        "demo": ["jobs/demo.py", "--out", out],  # the demo replaces its folder on every run
    }[job]  # fmt: skip
    r = run_job(args, timeout=300)
    line = one_error_line(r)
    what = {"build_cube": "cube", "infer_region": "mosaic", "demo": "demo folder"}[job]
    assert f"output {out} exists and is not a sar2opt {what}" in line, line
    assert "(nothing was changed)" in line
    _untouched(out, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], "a sibling was created"


def test_overwrite_refuses_another_jobs_output(tmp_path, syn_trained, tiny_ckpt, syn_catalog):
    """A cube is a sar2opt output, but not a mosaic: infer_region --overwrite keeps it."""
    import shutil

    cube = tmp_path / "cube.zarr"
    shutil.copytree(syn_trained["cube"], cube)
    before = sorted(str(p.relative_to(cube)) for p in cube.rglob("*"))
    r = run_job(
        ["jobs/infer_region.py", *syn_args(syn_catalog["url"]), "--checkpoint", tiny_ckpt,
         "--out", cube, "--overwrite"],
        timeout=300,
    )  # fmt: skip
    assert f"output {cube} is a sar2opt cube (jobs/build_cube.py), not a mosaic" in (
        one_error_line(r)
    )
    assert sorted(str(p.relative_to(cube)) for p in cube.rglob("*")) == before
