# The two commands of the README: `make run` and `make test`. Everything installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test check lint typecheck unit fast docs bench clean

# Python may cache compiled modules (and pytest its rewritten test modules) under __pycache__/ (ignored
# by git) even where the environment says not to (PYTHONDONTWRITEBYTECODE, set on some machines and CI
# images): without the cache every pytest process, xdist worker and subprocess compiles the project
# and rewrites ~200 test modules again (collecting the suite: 10.9 s of CPU, 4.8 s with the cache).
unexport PYTHONDONTWRITEBYTECODE

# uv installs the pinned requirements (the same versions pip resolves: the files pin them) in a few
# seconds where pip takes half a minute, and compiles the bytecode as pip does; it is itself pinned in
# requirements-dev.txt and bootstrapped with the venv's own pip. The venv keeps its pip. --system-certs:
# the machine's certificate store, as pip uses it (a proxy's own CA is trusted the same way).
UV := $(VENV)/bin/uv
UV_PIN = $(shell grep -m1 '^uv==' requirements-dev.txt)

include infra/checks.mk  # after UV: its venv is installed with it

$(UV): requirements-dev.txt
	$(PY) -c "import sys" 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(UV_PIN)"
	touch $@

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml $(UV)
	$(UV) pip install -q --system-certs --python $(PY) --compile-bytecode -r requirements-dev.txt
	$(UV) pip install -q --system-certs --python $(PY) --no-deps -e .
	touch $@

install: $(STAMP)

# npm ci: exactly the lockfile's tree, without resolving it again; --prefer-offline: from npm's cache
# when it has them, without asking the registry whether they changed (a pinned version does not)
node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error --prefer-offline
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

## make test: every test and check, as CI runs them: the three installs side by side, then the static
## checks two at a time (each uses one core; check-infra's venv is used by a unit test, so it comes
## first), then the tests (which use both cores themselves)
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target install node_modules/.bin/azurite $(INFRA_STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck docs check-infra
	$(MAKE) --no-print-directory unit

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
