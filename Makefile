# billfold: `make run` starts the server, `make test` runs the whole suite.
# Everything the project needs is installed here: Python packages into .venv from PyPI,
# the console's scripts from npm (package-lock.json) into node_modules, and for the
# browser tests Debian's chromium with CJK fonts.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.package-lock.json
BILLFOLD_HOME ?= .billfold
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# The suite runs on both cores; an idle worker takes tests still queued on the other.
TEST_WORKERS ?= 2

.PHONY: run test check lint format typecheck bench services browser messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The console's Chart.js, and Swagger UI and ReDoc for /docs and /redoc: from npm, at the
# versions the lock file names, without running any package's install scripts.
$(NODE_STAMP): package-lock.json
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# On first run (no database yet) the demo platform is loaded, and its logins printed.
run: $(STAMP) $(NODE_STAMP)
	@if [ ! -e "$(BILLFOLD_HOME)/billfold.db" ]; then BILLFOLD_HOME=$(BILLFOLD_HOME) $(BIN)/billfold demo; fi
	@echo "billfold: the console is at http://$(HOST):$(PORT)/  (API docs at /docs, OpenAPI at /openapi.json)"
	@echo "billfold: the demo logins are above on first run; an operator login: $(BIN)/billfold admins create --email you@example.com"
	BILLFOLD_HOME=$(BILLFOLD_HOME) $(BIN)/billfold serve --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium; Chinese pages need CJK fonts.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "cjk"; then \
	  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk; \
	fi

# Re-extracts the console's messages and updates the Chinese catalog (then translate).
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k t -k _ -k N_ --project=billfold --no-location --omit-header -o .messages.pot .
	$(BIN)/pybabel update -i .messages.pot -d src/billfold/web/locale -l zh_CN --no-fuzzy-matching
	rm -f .messages.pot

# Starts the local PostgreSQL server when it is installed but not running; the
# PostgreSQL tests need it, and they fail rather than skip when CI=true.
services:
	@if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null 2>&1; then \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n 1) main start || true; \
	  fi; \
	fi
	@# The stream tests start NATS clusters of their own from Debian's nats-server.
	@if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then \
	  apt-get update -qq && apt-get install -y -qq nats-server; \
	fi

test: $(STAMP) $(NODE_STAMP) browser services
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP) $(NODE_STAMP) services
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/pricing.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/billrun.py
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/console.py

clean:
	rm -rf $(VENV) node_modules .billfold .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/screenshots
