# Two commands matter: `make demo` (run the app's main job locally) and `make test` (install + all checks).
SHELL := /bin/bash

# Python 3.12 (what Azure runs) or 3.11: the first of the two that actually starts is used
# (a pyenv shim can exist for a version that is not selected, so `command -v` is not enough).
# Override: make test PYTHON=python3.11. After switching, `make clean` rebuilds the venvs, or
# keep one set per Python: make test PYTHON=python3.13 VENV=.venv313 CHECKOV_VENV=.venv-checkov313
# (3.13 installs azure-functions 2.x: requirements.txt pins one version per side of 3.13).
SUPPORTED_PYTHONS := python3.12 python3.11
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in $(SUPPORTED_PYTHONS); do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
endif
CHECK_PYTHON = @test -n "$(PYTHON)" || { echo "Python 3.12 or 3.11 is needed: none of" \
	"$(SUPPORTED_PYTHONS) starts here; install one or pass PYTHON=/path/to/python3.12" >&2; exit 1; }
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
AZURITE := node_modules/.bin/azurite

.PHONY: install test lint typecheck pytest infra-check demo start sim azurite bench lock clean teams-app

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt constraints-checkov.txt
	$(CHECK_PYTHON)
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
	$(PY) -m devtools.demo $(ARGS)

start: install
	$(PY) -m devtools.demo.start $(ARGS)

# The Graph simulator on 127.0.0.1:7072 as local.settings.example.json expects it: its bot app
# id (token audience), its IDENTITY_HEADER (managed-identity endpoint) and the app's webhook on
# port 7071 for the calls it places. Ctrl-C stops it.
SIM_FLAGS := --bot-app-id 00000000-0000-0000-0000-00000000b07a \
	--identity-header local-graph-simulator \
	--callback-url http://127.0.0.1:7071/api/calls
sim: $(VENV)/.installed
	exec $(PY) -m devtools.graphsim serve $(SIM_FLAGS)

# Azurite in the foreground, in memory, on 127.0.0.1's default ports (10000-10002, what
# UseDevelopmentStorage=true points at). exec replaces the shell with node, so Ctrl-C stops
# Azurite itself and leaves no node process behind.
azurite: node_modules/.installed
	exec $(AZURITE) --inMemoryPersistence --silent --disableTelemetry --skipApiVersionCheck --loose \
		--blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1

# Writes benchmarks/.scratch/results/ by default; `make bench ARGS=--commit` updates the
# committed BENCHMARKS.md and benchmarks/results.json.
bench: install
	$(PY) -m benchmarks $(ARGS)

# requirements.txt pins the app's whole dependency tree at the versions in constraints.txt.
lock: $(VENV)/.installed
	$(PY) -m devtools.lock_requirements

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
