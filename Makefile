# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test install lint format lock prereqs demo-site test-services down clean

# `make run SEED=https://example.org/` crawls that site instead of the demo website.
run: install demo-site
	$(BIN)/orchard run $(if $(SEED),--seed $(SEED))

test: install test-services
	$(BIN)/pytest

install: $(STAMP)

prereqs:
	@PYTHON=$(PYTHON) scripts/check-prereqs

# The embedded default corpus: the Python documentation from Debian's python3.11-doc,
# which `orchard up` serves on loopback for the pipeline to crawl.
demo-site:
	@scripts/install-demo-site

# Servers the tests start on loopback themselves (PostgreSQL and Redis for the platform API).
test-services:
	@scripts/install-test-services

# Re-runs only when the dependency files change; pip install is itself idempotent.
$(STAMP): pyproject.toml requirements.lock
	@PYTHON=$(PYTHON) scripts/check-prereqs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve and pin every dependency (after editing pyproject.toml).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev]'
	{ echo "# The full resolved dependency set, used as pip constraints by 'make install'."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml dependencies."; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock
	rm -rf .venv-lock

down:
	$(BIN)/orchard down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
