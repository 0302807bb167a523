# Offline checks of the infrastructure code and the CI workflow; the top-level Makefile includes
# this file and `make test` runs `check-infra`. Nothing here needs Azure or the Bicep CLI.
#   scripts/check_infra.py  every .bicep parses (pycep) and checkov passes with .checkov.yaml
#   check-jsonschema        .github/workflows/*.yml match the GitHub Actions workflow schema
#   zizmor --offline        the workflows' security audit (.github/zizmor.yml)
INFRA_VENV := .venv-infra
INFRA_PY := $(INFRA_VENV)/bin/python
INFRA_STAMP := $(INFRA_VENV)/.installed-infra
INFRA_PYTHON ?= python3

# Re-run when requirements-infra.txt changes: an existing, working .venv-infra is updated in place;
# one whose interpreter does not run (copied from another machine) is recreated.
# Installed with the main venv's uv (Makefile), so the two venvs install side by side.
$(INFRA_STAMP): requirements-infra.txt $(UV)
	$(INFRA_PY) -c "import sys" 2>/dev/null || $(INFRA_PYTHON) -m venv --clear $(INFRA_VENV)
	$(UV) pip install -q --system-certs --python $(INFRA_PY) --compile-bytecode -r requirements-infra.txt
	touch $@

.PHONY: check-infra
check-infra: $(INFRA_STAMP)
	$(INFRA_PY) scripts/check_infra.py
	$(INFRA_PY) -m check_jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(INFRA_VENV)/bin/zizmor --offline --no-progress .github/workflows
