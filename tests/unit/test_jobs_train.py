"""jobs/train.py: argument parsing and one-line user errors (no Ray started)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

JOB = runpy.run_path(str(Path(__file__).resolve().parents[2] / "jobs" / "train.py"), run_name="job")


def test_parse_args() -> None:
    a = JOB["parse_args"](
        ["--cube", "c.zarr", "--out", "o", "--set", "train.epochs=2", "--set", "model.ngf=8"]
    )
    assert a.cube == Path("c.zarr") and a.out == Path("o") and a.config is None
    assert a.set == ["train.epochs=2", "model.ngf=8"]
    assert a.cubes == [Path("c.zarr")]
    two = JOB["parse_args"](["--cube", "a.zarr", "--cube", "b.zarr", "--out", "o"])
    assert two.cubes == [Path("a.zarr"), Path("b.zarr")] and two.cube == Path("a.zarr")


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--set", "train.epochs=two"], "error: train.epochs: expected an integer"),
        (["--set", "train.nope=1"], "error: unknown key(s) nope in train"),
        ([], "error: cube not found"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    tmp_path: Path, capsys, extra: list[str], msg: str
) -> None:
    args = JOB["parse_args"](
        ["--cube", str(tmp_path / "missing.zarr"), "--out", str(tmp_path), *extra]
    )
    assert JOB["main"](args) == 2
    err = capsys.readouterr().err
    assert err.startswith(msg) and err.count("\n") == 1
