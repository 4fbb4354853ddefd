# mark2 — the two commands are `make workbook` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mark2-installed
# Notebook timeout per cell, seconds (widget notebooks must never hang headless).
CELL_TIMEOUT ?= 900
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MPLBACKEND := Agg

.PHONY: help setup data workbook test test-fast lab bench clean-runs

help:
	@echo "make workbook   set up .venv, build the default data, run notebooks 01-05 -> runs/executed/"
	@echo "make test       set up .venv, run unit tests and the notebook tests (pytest)"
	@echo "make lab        open JupyterLab in the project's environment"
	@echo "make bench      run the benchmarks in benchmarks/"

# Create the venv and install the pinned dependencies once; re-runs only when
# pyproject.toml changes (pip then skips what is already satisfied).
$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
	  echo "==> creating $(VENV) with $$($(PYTHON) --version)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	@echo "==> installing pinned dependencies and mark2_lib (pip install -e .[dev])"
	@$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)
	@echo "==> environment ready: $$($(PY) -c 'import torch, torchaudio; print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")')"

data: setup
	@$(PY) -m mark2_lib make-data

workbook: data
	@$(PY) -m mark2_lib run-notebooks --timeout $(CELL_TIMEOUT)

test: setup
	@echo "==> running pytest (unit tests + notebooks through papermill)"
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not notebook and not slow" $(PYTEST_ARGS)

lab: setup
	@$(VENV)/bin/jupyter lab notebooks/

bench: setup
	@for b in benchmarks/bench_*.py; do echo "==> $$b"; $(PY) $$b || exit 1; done

clean-runs:
	rm -rf runs/
