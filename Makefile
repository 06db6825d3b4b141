# The two commands of the README: `make demo` and `make test`. Both start with `make setup`.
SHELL   := /bin/bash
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
OUT     ?= out
SHARED  ?= ../shared/data
LOCK    := requirements.lock
# torch is not in the lock: its wheel differs by platform and accelerator (PyPI's Linux wheel
# pulls CUDA). `make setup` installs this release's CPU build in a step of its own, its
# dependencies come from the lock. GPU images install the CUDA build of the same release.
TORCH   := 2.13.0
# where the CPU build comes from; on a machine with the wheels on disk:
#   make setup TORCH_FROM="--find-links /opt/wheels"
TORCH_FROM ?= --extra-index-url https://download.pytorch.org/whl/cpu

.PHONY: setup lock demo demo-real test test-heavy test-fast lint format bench clean

setup: $(VENV)/.installed

# Every package at the exact version and hash of the lock (pip refuses anything else), then
# torch without dependencies, then this package without dependencies; `pip check` proves the
# set is complete and consistent.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "sar2opt needs Python 3.11+")'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --only-binary=:all: -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps torch==$(TORCH) $(TORCH_FROM)
	$(BIN)/python -c 'import torch; assert torch.version.cuda is None, "got a CUDA build of torch"'
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Regenerate the lock from pyproject.toml (newest versions its ranges allow, every platform,
# Python 3.11+, every wheel's hash). torch's dependencies are those of its CPU build.
lock: setup
	printf 'pip\nsetuptools>=77\n' | UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile \
	  pyproject.toml - --extra dev --extra pc --extra bench --universal --python-version 3.11 \
	  --generate-hashes --no-emit-package torch --index-strategy unsafe-best-match \
	  $(TORCH_FROM) --constraint <(echo torch==$(TORCH)+cpu) \
	  --custom-compile-command 'make lock' --output-file $(LOCK) $(UPGRADE)

demo: setup
	$(BIN)/python jobs/demo.py --source synthetic --out $(OUT)/demo

demo-real: setup
	$(BIN)/python jobs/demo.py --source real --src $(SHARED) --out $(OUT)/demo-real

test: setup
	$(BIN)/python -m pytest -q --durations=15 -m "not heavy" tests

# the slowest whole-job runs, which `make test` leaves out; CI (.ci/run) runs both
test-heavy: setup
	$(BIN)/python -m pytest -q --durations=10 -m heavy tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(OUT)
