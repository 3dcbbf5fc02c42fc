# billfold: `make run` starts the server, `make test` runs the whole suite.
# Everything the project needs is installed here, into .venv, from PyPI.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# The suite runs on both cores; each test file stays on one worker (its fixtures and
# servers are set up once per file).
TEST_WORKERS ?= 2

.PHONY: run test check lint format typecheck bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	@echo "billfold: starting on http://$(HOST):$(PORT)  (API docs at /docs, OpenAPI at /openapi.json)"
	@echo "billfold: get an admin key with:  $(BIN)/billfold keys create --role admin"
	$(BIN)/billfold serve --host $(HOST) --port $(PORT)

# Starts the local PostgreSQL server when it is installed but not running; the
# PostgreSQL tests need it, and they fail rather than skip when CI=true.
services:
	@if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null 2>&1; then \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n 1) main start || true; \
	  fi; \
	fi

test: $(STAMP) services
	$(BIN)/lint-imports --config pyproject.toml
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP) services
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/pricing.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/billrun.py
	$(BIN)/python bench/analytics.py

clean:
	rm -rf $(VENV) .billfold .pytest_cache .mypy_cache .ruff_cache .hypothesis
