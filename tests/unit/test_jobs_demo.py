"""`jobs/demo.py --source real` (make demo-real): what it checks before any work, and the
table it prints from each set's evaluate scores."""

from __future__ import annotations

import pytest

from tests.helpers.jobs import error_line, load_job


@pytest.fixture(scope="module")
def demo():
    return load_job("demo")


def _scores(ridge: float, ckpt: float, fit: float) -> dict:
    # SSIM falls as MAE grows here (1 - 10 x MAE)
    row = lambda m: {"mae": [m, m / 10], "ssim": [1 - 10 * m, 0.01], "pixels": [1000, 0]}  # noqa: E731
    return {
        "summary": {
            "checkpoint unet SCO (epoch 4)": row(ckpt),
            "ridge per date (baseline)": row(ridge),
            "scene fit per date: SAR + prior (baseline)": row(fit),
            "ridge pooled (baseline)": row(0.5),
        },
        "coverage": {"scene fit per date: SAR + prior (baseline)": 0.8},
    }


def test_the_real_table_puts_each_method_against_the_per_date_ridge(demo) -> None:
    text = demo._real_table({"bms": _scores(0.03, 0.024, 0.021), "ssl": _scores(0.02, 0.03, 0.01)})
    rows = [ln.split() for ln in text.splitlines() if ln.startswith(("bms", "ssl"))]
    # per set: checkpoint, scene fit, ridge (the order of _real_table's rows; pooled ridge left out)
    assert [r[1] for r in rows] == ["checkpoint", "scene", "ridge"] * 2
    ratio = {(r[0], r[1]): float(r[-7]) for r in rows}
    assert ratio[("bms", "checkpoint")] == pytest.approx(0.8)
    assert ratio[("ssl", "checkpoint")] == pytest.approx(1.5)
    assert ratio[("bms", "ridge")] == 1.0
    ssim = {(r[0], r[1]): (float(r[-6]), r[-3]) for r in rows}
    assert ssim[("bms", "checkpoint")] == (pytest.approx(0.76), "yes")  # 1 - 0.24 >= 0.7
    assert ssim[("ssl", "checkpoint")] == (pytest.approx(0.7), "no")  # 0.7 < 0.8
    assert [r[-2] for r in rows if r[1] == "scene"] == ["80", "80"]  # coverage, %


def test_real_demo_without_the_samples_stops_with_one_line(demo, tmp_path, capsys) -> None:
    (tmp_path / "data" / "ssl4eo_sample").mkdir(parents=True)
    args = demo.parse_args(
        ["--source", "real", "--src", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    )
    assert demo.main(args) == 2
    line = error_line(capsys)
    assert "lacks biomassters_sample, multiearth_sample" in line
    assert not (tmp_path / "out" / "biomassters").exists()


def test_across_trainings_each_set_s_ratio_per_training_and_whether_each_meets_the_goal(
    demo,
) -> None:
    def scores(ckpt: float, bins: list[tuple[float, float]]) -> dict:
        s = _scores(0.03, ckpt, 0.02)
        s["reliability"] = {
            "checkpoint unet SCO (epoch 4)": [{"stated": a, "abs_error": b} for a, b in bins]
        }
        return s

    calibrated, off = [(0.01, 0.011), (0.02, 0.019)], [(0.01, 0.005), (0.02, 0.04)]
    tables = {
        0: {"bms": scores(0.021, calibrated), "ssl": scores(0.033, off)},
        1: {"bms": scores(0.027, calibrated), "ssl": scores(0.030, off)},
        2: {"bms": scores(0.018, off), "ssl": scores(0.036, calibrated)},
    }
    text = demo._across_trainings(tables)
    assert "train.seed 0 1 2" in text
    row = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("bms", "ssl"))}
    assert [float(v) for v in row["bms"][1:4]] == [0.7, 0.9, 0.6]  # x ridge per training
    assert float(row["bms"][4]) == pytest.approx(0.73, abs=0.005)  # their mean
    # SSIM falls as MAE grows here: a training worse than ridge has the lower SSIM
    assert row["ssl"][7:10] == ["-0.030", "+0.000", "-0.060"]
    # the goal (<= 0.8 x ridge with SSIM >= ridge's): two of the three bms trainings, no ssl
    assert row["bms"][10:13] == ["2", "of", "3"] and row["ssl"][10:13] == ["0", "of", "3"]
    # each training's range of |error| / stated over the deciles
    assert row["bms"][-3:] == ["0.95-1.10,", "0.95-1.10,", "0.50-2.00"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--train-seeds", "0", "1"], "--train-seeds is for --source real, not --source synthetic"),
        (["--source", "real", "--train-seeds", "0", "0"], "each seed once, got 0 0"),
    ],
)
def test_train_seeds_other_than_distinct_seeds_of_the_real_demo_stop_with_one_line(
    demo, tmp_path, capsys, argv, said
) -> None:
    args = demo.parse_args([*argv, "--out", str(tmp_path / "out")])
    assert demo.main(args) == 2
    assert said in error_line(capsys)
    assert not (tmp_path / "out").exists()  # before any work
