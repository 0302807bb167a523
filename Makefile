# The two commands of the README: `make run` and `make test`. Everything installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test check lint typecheck unit fast docs bench clean

include infra/checks.mk

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(STAMP)

node_modules/.bin/azurite: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

## make run: the local development host on http://127.0.0.1:$${PORT:-7071}, example policy, SQLite ledger, dry run
run: install
	$(VENV)/bin/retrain host

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

## make unit: every test; all but the storms on both cores (pytest-xdist), then the storms alone,
## since each runs eight worker processes that keep both cores busy by themselves
unit: install node_modules/.bin/azurite
	$(PY) -m pytest -n 2 -m "not storm"
	$(PY) -m pytest -m storm

## make docs: the documentation site (mkdocs.yml, docs/) in strict mode: a broken link or a page
## missing from the nav fails; the site goes to .retrain/site (not committed)
docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir .retrain/site

## make test: every test and check, as CI runs them (check-infra first: its venv is used by a unit test)
test: lint typecheck docs check-infra unit

## make check: the loop while you work (under a minute): lint, types, and the tests that need neither
## Azurite, the Azure ML SDK world, the infra parsers nor long (not marked azurite, sdk, infra or
## slow; make test runs those too)
check: lint typecheck fast

fast: install
	$(PY) -m pytest -q -n 2 -m "not azurite and not sdk and not infra and not slow"

bench: install node_modules/.bin/azurite
	$(PY) bench/run.py
	$(PY) bench/rollout_sim.py

clean:
	rm -rf $(VENV) .venv-infra node_modules .retrain .pytest_cache .mypy_cache .ruff_cache
