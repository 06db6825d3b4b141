"""Bad input: one specific line on stderr (no traceback), exit code 2, and no output left.

Each case asserts the message of its own cause, so two causes cannot pass on one message.
Cases that need no catalog point ``--stac-url`` at a port where nothing listens: they must
fail on their own cause before the catalog would be contacted. Most fail before Ray starts;
the jobs that read pixels run with ``--executor local``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.jobs import (
    DEMO_CFG,
    PLANTED_ENV,
    PY,
    REPO,
    SYN_AOI,
    SYN_DATES,
    one_error_line,
    run_job,
    syn_args,
    write_json,
)

pytestmark = pytest.mark.slow

NOBODY = "http://127.0.0.1:9"  # nothing listens: a case that contacts it fails otherwise
OUTSIDE = {  # a polygon in Africa, far from every catalog of ours
    "type": "Polygon",
    "coordinates": [[[20.0, 0.0], [20.1, 0.0], [20.1, 0.1], [20.0, 0.1], [20.0, 0.0]]],
}
POINT = {"type": "Point", "coordinates": [-51.0, -3.0]}
FLAT = {  # a polygon whose points lie on one line: zero area
    "type": "Polygon",
    "coordinates": [[[-51.0, -3.0], [-50.99, -3.0], [-50.98, -3.0], [-51.0, -3.0]]],
}


def _nothing_left(tmp_path: Path, out: Path) -> None:
    """No output, no partial/lock sibling: the failed job created nothing."""
    assert not out.exists(), f"{out} was created"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(out.name)]


def _shared_cases(tmp_path: Path, url: str) -> dict:
    """(AOI, start, end, STAC URL, the line's pattern) of the cases both jobs share."""
    bad_json = write_json(tmp_path / "bad.geojson", "{ not json")
    outside = write_json(tmp_path / "outside.geojson", OUTSIDE)
    s, e = SYN_DATES
    missing = tmp_path / "nope.geojson"
    return {
        "missing AOI": (missing, s, e, url, f"AOI file not found: {re.escape(str(missing))}$"),
        "invalid GeoJSON": (
            bad_json, s, e, url, f"AOI file {re.escape(str(bad_json))} is not valid JSON"
        ),
        "AOI not covered": (
            outside, s, e, url,
            r"no Sentinel-1 acquisitions .* intersect the AOI \(20\.0, 0\.0, 20\.1, 0\.1\) "
            f"between {s} and {e}",
        ),
        "no S1 in dates": (
            SYN_AOI, "2015-01-01", "2015-02-01", url,
            r"no Sentinel-1 acquisitions .* intersect the AOI \(-\S+ -\S+ -\S+ -\S+\) "
            "between 2015-01-01 and 2015-02-01",
        ),
        "unreachable catalog": (
            SYN_AOI, s, e, NOBODY, r"STAC catalog http://127\.0\.0\.1:9 is unreachable"
        ),
    }  # fmt: skip


SHARED = ["missing AOI", "invalid GeoJSON", "AOI not covered", "no S1 in dates"]
SHARED += ["unreachable catalog"]


def _cube(tmp_path, aoi, start, end, url, *extra, out=None):
    out = out or tmp_path / "cube.zarr"
    args = syn_args(url, aoi=aoi, start=start, end=end, config=None)
    return run_job(["jobs/build_cube.py", *args, "--out", out, *extra], timeout=300), out


def _infer(tmp_path, aoi, start, end, url, ckpt, *extra, out=None):
    out = out or tmp_path / "mosaic.zarr"
    args = syn_args(url, aoi=aoi, start=start, end=end)
    r = run_job(
        ["jobs/infer_region.py", *args, "--checkpoint", ckpt, "--out", out, *extra], timeout=300
    )
    return r, out


def _assert_line(r: subprocess.CompletedProcess, pattern: str) -> None:
    line = one_error_line(r)
    assert "Traceback" not in r.stderr, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
    assert re.search(pattern, line), (pattern, line)


@pytest.mark.parametrize("case", SHARED)
def test_build_cube_bad_input(case, tmp_path, syn_catalog):
    aoi, start, end, url, pattern = _shared_cases(tmp_path, syn_catalog["url"])[case]
    r, out = _cube(tmp_path, aoi, start, end, url)
    _assert_line(r, pattern)
    _nothing_left(tmp_path, out)


@pytest.mark.parametrize("case", SHARED)
def test_infer_region_bad_input(case, tmp_path, syn_catalog, tiny_ckpt):
    aoi, start, end, url, pattern = _shared_cases(tmp_path, syn_catalog["url"])[case]
    r, out = _infer(tmp_path, aoi, start, end, url, tiny_ckpt)
    _assert_line(r, pattern)
    _nothing_left(tmp_path, out)


# --- dates: checked first, before the catalog (at NOBODY) is contacted ------------------------


def test_start_after_end_is_caught_before_the_catalog(tmp_path):
    r, out = _cube(tmp_path, SYN_AOI, "2023-08-31", "2023-07-01", NOBODY)
    _assert_line(r, r"^error: --start 2023-08-31 is after --end 2023-07-01")
    _nothing_left(tmp_path, out)


def test_month_13_is_caught_before_the_catalog(tmp_path, tiny_ckpt):
    r, out = _infer(tmp_path, SYN_AOI, "2023-13-01", "2023-08-31", NOBODY, tiny_ckpt)
    _assert_line(r, r"^error: --start '2023-13-01' is not a date YYYY-MM-DD: month must be")
    _nothing_left(tmp_path, out)


def test_monitor_until_month_13_is_caught_first(tmp_path, tiny_ckpt):
    store = tmp_path / "mosaic.zarr"  # need not exist: the date fails first
    r = run_job(
        ["jobs/monitor.py", "--aoi", SYN_AOI, "--checkpoint", tiny_ckpt, "--store", store,
         "--until", "2024-13-01", "--stac-url", NOBODY],
        timeout=300,
    )  # fmt: skip
    _assert_line(r, r"^error: --until '2024-13-01' is not a date YYYY-MM-DD: month must be")
    _nothing_left(tmp_path, store)


# --- AOIs of zero area ------------------------------------------------------------------------


def test_point_aoi_is_refused(tmp_path):
    aoi = write_json(tmp_path / "point.geojson", POINT)
    r, out = _cube(tmp_path, aoi, *SYN_DATES, NOBODY)
    _assert_line(r, r"AOI must be Polygon or MultiPolygon, .*point\.geojson has Point$")
    _nothing_left(tmp_path, out)


def test_degenerate_polygon_aoi_is_refused(tmp_path, tiny_ckpt):
    aoi = write_json(tmp_path / "flat.geojson", FLAT)
    r, out = _infer(tmp_path, aoi, *SYN_DATES, NOBODY, tiny_ckpt)
    _assert_line(r, r"AOI in .*flat\.geojson has zero area \(its polygon is degenerate\)$")
    _nothing_left(tmp_path, out)


# --- configs ----------------------------------------------------------------------------------


def test_unknown_config_key_in_set_is_rejected(tmp_path):
    r, out = _cube(tmp_path, SYN_AOI, *SYN_DATES, NOBODY, "--set", "cube.res=20")
    _assert_line(r, r"^error: unknown key\(s\) res in cube; allowed: ")
    _nothing_left(tmp_path, out)


def test_unknown_config_key_in_yaml_file_is_rejected(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  epochs: 2\n  epoches: 3\n")
    out = tmp_path / "train"
    r = run_job(
        ["jobs/train.py", "--cube", tmp_path / "none.zarr", "--out", out, "--config", cfg],
        timeout=300,
    )
    _assert_line(r, r"^error: unknown key\(s\) epoches in train; allowed: ")
    _nothing_left(tmp_path, out)


# --- checkpoints ------------------------------------------------------------------------------


def test_missing_checkpoint(tmp_path, syn_catalog):
    r, out = _infer(tmp_path, SYN_AOI, *SYN_DATES, syn_catalog["url"], tmp_path / "none")
    _assert_line(r, r"^error: no checkpoint at .*none/model\.pt$")
    _nothing_left(tmp_path, out)


def test_junk_checkpoint_is_one_line_not_a_traceback(tmp_path, odd_checkpoints):
    r, out = _infer(tmp_path, SYN_AOI, *SYN_DATES, NOBODY, odd_checkpoints["junk"])
    _assert_line(r, r"^error: .*junk/model\.pt is not a readable PyTorch checkpoint \(")
    _nothing_left(tmp_path, out)


def test_checkpoint_of_other_sar_bands(tmp_path, odd_checkpoints):
    r, out = _infer(tmp_path, SYN_AOI, *SYN_DATES, NOBODY, odd_checkpoints["hh_hv"])
    _assert_line(
        r,
        r"was trained on SAR bands \['hh', 'hv'\] but the catalog config gives \['vv', 'vh'\]",
    )
    _nothing_left(tmp_path, out)


def test_checkpoint_of_other_optical_bands(tmp_path, odd_checkpoints):
    r, out = _infer(
        tmp_path, SYN_AOI, *SYN_DATES, NOBODY, odd_checkpoints["b8a"],
        "--set", "infer.composite_max_dt_days=3",
    )  # fmt: skip
    _assert_line(r, r"predicts \['B02', 'B03', 'B04', 'B8A'\] but the catalog config's optical")
    _nothing_left(tmp_path, out)


# --- catalog assets -----------------------------------------------------------------------------


def test_truncated_cog_in_the_catalog(tmp_path, broken_catalogs):
    bad = broken_catalogs["truncated"]
    r, out = _cube(tmp_path, SYN_AOI, *SYN_DATES, bad["url"], "--config", DEMO_CFG)
    _assert_line(r, rf"^error: cannot read asset {re.escape(bad['href'])}: ")
    # the tiled build keeps what it wrote to resume, but no tile of it is marked done
    assert not (out / "_tiles").exists() or not list((out / "_tiles").iterdir())


@pytest.mark.parametrize("job", ["build_cube", "infer_region"])
def test_asset_that_answers_404(job, tmp_path, broken_catalogs, tiny_ckpt):
    bad = broken_catalogs["404"]
    if job == "build_cube":
        r, out = _cube(tmp_path, SYN_AOI, *SYN_DATES, bad["url"], "--config", DEMO_CFG)
    else:
        r, out = _infer(tmp_path, SYN_AOI, *SYN_DATES, bad["url"], tiny_ckpt, "--executor", "local")
    _assert_line(r, rf"^error: cannot open asset {re.escape(bad['href'])}: .*404")
    assert not out.exists() or job == "build_cube"  # (a cube keeps its unmarked store)


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root can mount one); else a 2 MiB file-size limit for the job."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True
    ).returncode == 0  # fmt: skip
    yield d, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_while_writing_the_mosaic(small_disk, syn_catalog, tiny_ckpt):
    d, mounted = small_disk
    out = d / "mosaic.zarr"
    args = [*syn_args(syn_catalog["url"]), "--checkpoint", tiny_ckpt, "--out", out]
    cmd = [PY, "jobs/infer_region.py", *map(str, args), "--executor", "local"]
    if not mounted:  # RLIMIT_FSIZE: writes past 2 MiB fail with EFBIG (Python ignores SIGXFSZ)
        cmd = ["bash", "-c", 'ulimit -f 2048 && exec "$@"', "_", *cmd]
    r = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ | PLANTED_ENV
    )
    want = "no space left on device" if mounted else "file size limit exceeded"
    _assert_line(r, rf"^error: {want} writing {re.escape(str(out))}\S*: free space or ")
    assert not out.exists()  # only <out>.partial, which a re-run with space resumes
