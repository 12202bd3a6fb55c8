# Run `make help` for the list. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | sha1sum | cut -c1-12)
export TF_USE_LEGACY_KERAS := 1
export PREFECT_HOME ?= $(abspath .prefect)
# Prefect's default 20 s start-up timeout is too short for a loaded 2-core machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup browser demo night pin-starts test test-fast lint format bench mlflow-ui serve deploy

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) ## Create .venv and install the pinned stack (constraints.txt)

browser: ## Install Debian's chromium for the Prefect UI test (apt-get; needs root) if missing
	@command -v chromium >/dev/null || (apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

demo: setup ## Set up, run the retrain flow (every stage) on the demo data, print the run summary
	@dvc remote default >/dev/null 2>&1 || dvc remote add -d local ../dvc-remote
	@mkdir -p dvc-remote
	$(BIN)/python -m flows.retrain
	$(BIN)/python -m flows.summary

night: setup ## Play the next demo night (demo.night + 1: new images, ratings, reviews), run the flow from the champion
	$(BIN)/python -m edge_pipeline.quality.demo_nights
	$(BIN)/python -m flows.retrain
	$(BIN)/python -m flows.summary

pin-starts: setup ## On a night's commit (after dvc pull): pin train/distill/prune.init to the runs that night started from
	$(BIN)/python -m edge_pipeline.registry.pin_starts

test: setup browser ## Set up, then run all tests (slow end-to-end ones included)
	EDGE_TEST_SIDE=torch $(BIN)/python -m pytest
	$(BIN)/python -m pytest

test-fast: setup ## Run the tests not marked slow
	EDGE_TEST_SIDE=torch $(BIN)/python -m pytest -m "not slow"
	$(BIN)/python -m pytest -m "not slow"

lint: setup ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## Run benchmarks/bench_*.py and print figures (BENCH="ingest clean" for a subset)
	$(BIN)/python -m benchmarks $(BENCH)

mlflow-ui: setup ## Start the MLflow UI on 127.0.0.1:5000 over the local store
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlruns.db

serve: setup ## Start a local Prefect server (if none answers) and serve the nightly + on-demand deployments
	$(BIN)/python -m flows.deploy

deploy: setup ## Register prefect.yaml's deployments with a work pool (schedule from params.yaml)
	$(BIN)/python -m flows.deploy --work-pool
