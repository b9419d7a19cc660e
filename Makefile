# Two commands do all the set-up (README): `make demo` runs the workflow on the embedded demo dataset,
# `make test` runs the checks and the test suite (.ci/run calls it). Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format clean-demo

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  echo "python3 venv module missing: installing python3-venv (Debian)"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU wheel first: an unpinned torch would pull several GB of CUDA packages
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[workflow,dev]"
	# `snakemake train --profile slurm` from the repository root: installs profiles/slurm as your user profile
	# unless you already have a `slurm` profile (never overwritten; docs/CLUSTER.md)
	bash tools/install_slurm_profile.sh
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores all
	@echo "Shards and QC in results/shards/, results/qc/; model in results/train/; metrics in results/evaluate/; videos in results/render/"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow/
	$(BIN)/snakemake --lint --cores 1

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt workflow/

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q --timeout 900 --durations=15
