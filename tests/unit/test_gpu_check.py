"""benchmarks/gpu_check.sh: its CPU fallback runs end to end, so the GPU script cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_cpu_fallback_prints_every_table_and_checks_the_benchmark_clis() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(
        [str(ROOT / "benchmarks/gpu_check.sh"), "--cpu"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert re.search(r"commit [0-9a-f]{7}", out)
    rows = [line for line in out.splitlines() if re.match(r"\| (default|8-level)", line)]
    assert len(rows) == 8  # 2 models x fp32/bf16 x contiguous/channels-last
    assert all(float(r.rsplit("|", 2)[1].replace(",", "")) > 0 for r in rows)
    assert "their CLIs take every option used here" in out and "PROBLEM" not in out
    hours = re.search(
        r"\| bare forward, default model, 2 hypotheses \| [\d,.]+ \| ([\d.]+) \|", out
    )
    assert hours and float(hours.group(1)) > 0


def test_train_rate_reads_both_table_layouts() -> None:
    old = " workers samples/s data share\n      1      29.5     15.0%\n"
    new = (
        "workers           feed samples/s data share\n      1   stream/ahead      33.7      2.0%\n"
    )
    assert gpu_check.train_rate(old) == 29.5
    assert gpu_check.train_rate(new) == 33.7
    assert gpu_check.train_rate("Traceback ...") is None


def test_missing_option_is_reported() -> None:
    assert gpu_check.check_cli("bench_infer.py", ("--runs", "--no-such-option")) == [
        "bench_infer.py --no-such-option"
    ]
