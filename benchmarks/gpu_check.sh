#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): bare forward fp32/bf16 and channels-last for the
# default and the 8-level U-Net, the inference job with gpus_per_actor 1, training fp32/bf16
# with peak GPU memory, and the projected Amazon time per period on 16 GPUs, with the commit.
# Under 8 minutes on one GPU (each part has its own time limit); without CUDA, the CPU
# fallback in under a minute. Extra arguments go to gpu_check.py (--cpu, --skip-job, ...).
#
#     benchmarks/gpu_check.sh 2>&1 | tee gpu_check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
