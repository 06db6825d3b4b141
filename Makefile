# The two commands of the README: `make demo` and `make test`. Both start with `make setup`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
OUT     ?= out
SHARED  ?= ../shared/data

.PHONY: setup demo demo-real test test-fast lint format bench clean

setup: $(VENV)/.installed

# torch is pinned to the CPU build that lies on disk here; GPU images install the CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python jobs/demo.py --source synthetic --out $(OUT)/demo

demo-real: setup
	$(BIN)/python jobs/demo.py --source multiearth --src $(SHARED)/multiearth_sample --out $(OUT)/demo-real

test: setup
	$(BIN)/python -m pytest -q --durations=15 tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(OUT)
