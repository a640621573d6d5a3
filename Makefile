# Two commands matter: `make demo` (run the app's main job locally) and `make test` (install + all checks).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov

.PHONY: install test lint typecheck pytest infra-check demo start bench clean teams-app

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip==25.3
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt -c constraints-checkov.txt
	touch $@

install: $(VENV)/.installed node_modules/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy --strict shared

pytest: install
	$(PY) -m pytest

# checkov has no --hard-fail-on-parsing-errors flag: CKV_PARSE_ERROR_FAIL=true makes a file it
# cannot parse fail the run (otherwise it exits 0 after skipping that file). Its "Skipped checks"
# counts inline suppressions only, so the last line says what infra/checkov.yaml leaves out.
infra-check: $(CHECKOV_VENV)/.installed
	CKV_PARSE_ERROR_FAIL=true $(CHECKOV_VENV)/bin/checkov --directory infra --framework bicep \
		--skip-download --config-file infra/checkov.yaml --compact --quiet
	@$(CHECKOV_VENV)/bin/python -c 'import yaml; c = yaml.safe_load(open("infra/checkov.yaml")); \
		print("Not run, by infra/checkov.yaml (reasons there): %d checks (skip-check) and %d files (skip-path)" \
		% (len(c["skip-check"]), len(c["skip-path"])))'

## The test command: installs everything, then lint, types, tests and infrastructure checks.
test: lint typecheck pytest infra-check

# The Teams app package users upload to call the bot (docs/teams.md). The bot id comes from
# `make teams-app BOT_APP_ID=<client id>`, else from the azd environment (BOT_APP_ID output).
# tests/teams_app (part of `make test`) builds one and runs Microsoft's validator on it.
teams-app: install
	$(PY) -m devtools.teams_app build --out dist/teams-app.zip $(if $(BOT_APP_ID),--bot-app-id $(BOT_APP_ID),)

demo: install
	$(PY) -m devtools.demo

start: install
	$(PY) -m devtools.demo.start

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
