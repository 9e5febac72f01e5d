# Two commands for a new user: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# on machines without a local CPU wheel, so pip never pulls the multi-GB CUDA build.
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)
ENV := export PATH="$(abspath $(BIN)):$$PATH" && source scripts/env.sh &&

.PHONY: help venv airflow-db demo test test-fast test-shuffled lint airflow-ui serve constraints clean

help:
	@echo "make demo        run the demo pipelines end to end (sets everything up on first run)"
	@echo "make test        run the whole test suite"
	@echo "make test-shuffled  the suite in a random order (SEED=<n> to replay one)"
	@echo "make airflow-ui  start Airflow (UI on http://127.0.0.1:8080; PORT=, HOST= to change) with this project's DAGs"
	@echo "make serve       serve the demo champion on http://127.0.0.1:5001/invocations (after make demo)"
	@echo "make lint        ruff"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

airflow-db: venv
	@$(ENV) mkdir -p "$$AIRFLOW_HOME" "$$LLMOPS_HOME" && $(BIN)/airflow db migrate > "$$AIRFLOW_HOME/db-migrate.log" 2>&1 \
	  || { tail -20 "$$AIRFLOW_HOME/db-migrate.log"; exit 1; }

demo: airflow-db
	@$(ENV) $(BIN)/llmops demo

test: airflow-db
	$(ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: airflow-db
	$(ENV) $(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

# The whole suite in a random order (tests shuffled within modules, modules shuffled); SEED=<n> replays one.
test-shuffled: airflow-db
	$(ENV) $(BIN)/python -m pytest --random-order-bucket=module $(if $(SEED),--random-order-seed=$(SEED)) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check dags include/llmops plugins tests bench

# make airflow-ui [PORT=8080] [HOST=127.0.0.1]: only values given on the command line count (a PORT or
# HOST in the shell's environment does not move the UI). Ctrl-C stops everything it started.
airflow-ui: airflow-db
	@$(ENV) exec $(BIN)/python scripts/airflow_ui.py \
	  --port "$(if $(filter command line,$(origin PORT)),$(PORT),8080)" \
	  --host "$(if $(filter command line,$(origin HOST)),$(HOST),127.0.0.1)"

serve: venv
	@$(ENV) $(BIN)/llmops serve $${PIPELINE:-support_bot} --port $${PORT:-5001}

constraints: venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^llmops' | sed 's/+cpu$$//' > constraints.tmp
	{ head -2 constraints.txt; cat constraints.tmp; } > constraints.txt.new && rm constraints.tmp && mv constraints.txt.new constraints.txt

clean:
	rm -rf .airflow .llmops
