"""The context-reference benchmark runs the training stream's own fits and prints a row per
chunk size, whose peak memory is never below the inputs it was measured on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_context_reference.py"


def test_the_benchmark_prints_one_row_per_chunk_size() -> None:
    args = ["--windows", "6", "--window-px", "64", "--chunks", "6", "2"]
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1:-1] for ln in r.stdout.splitlines() if ln.startswith("| ") and
            ln.split("|")[1].strip().isdigit()]  # fmt: skip
    assert [int(c[0]) for c in rows] == [6, 2]
    for c in rows:
        peak, floor, above = (float(v) for v in c[1:4])
        assert peak >= floor > 0 and abs(above - (peak - floor)) <= 1
    assert float(rows[0][5]) == 1.0
