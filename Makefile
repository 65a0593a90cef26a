# Percept Curator: `make run` for the app on the local stack, `make test` for the whole suite.
# Everything is installed from this repository's own files; nothing is needed by hand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCZPY_VENV := .venv-sczpy
STATE := .devstack
APP_PORT ?= 8501
PYTEST_ARGS ?=
QUICK ?=

.DEFAULT_GOAL := help

.PHONY: help setup run app devstack devstack-down seed test lint format lock bench clean chromium

help:
	@echo "make run            set everything up, start the local stack with demo data and the app on http://127.0.0.1:$(APP_PORT)"
	@echo "make test           set everything up and run the whole test suite"
	@echo "make devstack       start only the local stack (Azurite, MM and Custom Vision emulators); writes $(STATE)/env"
	@echo "                    LEDGER=table: the settings name the shared ledger on Azurite's tables (also for make run)"
	@echo "make devstack-down  stop the local stack"
	@echo "make app            run the app alone (settings from the environment, .env or $(STATE)/env)"
	@echo "make bench          benchmarks against the original sample and the service limits (QUICK=1 for a short run)"
	@echo "make azure-probe    ask YOUR Custom Vision (and MM) which undocumented behaviours hold; ~10 transactions (PROBE_ARGS=...)"
	@echo "make lint           ruff"

# --- environments -----------------------------------------------------------------------------

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# sczpy 0.0.8 is the compatibility oracle of the tests and the baseline of the benchmarks; it pins
# azure-identity<1.3 and OpenTelemetry 0.15b0, so it lives in an environment of its own.
$(SCZPY_VENV)/.installed: tests/compat/sczpy-requirements.txt
	test -x $(SCZPY_VENV)/bin/python || $(PYTHON) -m venv $(SCZPY_VENV)
	$(SCZPY_VENV)/bin/python -m pip install --quiet "setuptools<81"
	$(SCZPY_VENV)/bin/python -m pip install --quiet -r tests/compat/sczpy-requirements.txt
	touch $@

devstack/node_modules/.installed: devstack/package.json devstack/package-lock.json
	cd devstack && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Headless Chromium for the browser tests and the reviewer benchmark: Debian's package, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

setup: $(VENV)/.installed devstack/node_modules/.installed

# --- the local stack and the app --------------------------------------------------------------

devstack: setup
	$(PY) -m devstack up --state $(STATE) $(if $(PROFILE),--profile $(PROFILE),) $(if $(LEDGER),--ledger $(LEDGER),)

devstack-down:
	@test -x $(PY) && $(PY) -m devstack down --state $(STATE) || true

seed: devstack

app: $(VENV)/.installed
	@if [ -f $(STATE)/env ]; then set -a; . ./$(STATE)/env; set +a; fi; \
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(APP_PORT) \
	  --server.headless true --browser.gatherUsageStats false

run: devstack app

# --- checks -------------------------------------------------------------------------------------

test: setup $(SCZPY_VENV)/.installed chromium
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup $(SCZPY_VENV)/.installed chromium
	$(PY) -m bench $(if $(QUICK),--quick,)

# Not part of `make test`: it talks to the real services named by your settings, with a scratch project it deletes.
# PROBE_ARGS: --provoke-429, --measure-pace, --mm (see `$(PY) -m tools.azure_probe --help`).
PROBE_ARGS ?=
.PHONY: azure-probe
azure-probe: $(VENV)/.installed
	$(PY) -m tools.azure_probe $(PROBE_ARGS)

# Regenerate the transitive lock after changing requirements*.txt.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements-dev.txt
	.venv-lock/bin/pip freeze --exclude-editable > constraints.txt
	rm -rf .venv-lock

clean: devstack-down
	rm -rf $(STATE) .pytest_cache .ruff_cache test-artifacts
