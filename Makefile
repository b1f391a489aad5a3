# The two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?=

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

## run: serve the bundled default config at http://127.0.0.1:8765/mcp (or CONFIG=path/to/patchbay.json)
run: $(BIN)/.installed
	$(BIN)/patchbay serve $(if $(CONFIG),--config $(CONFIG),)

## test: every test (installs the pinned third-party MCP servers the tests use)
test: $(BIN)/.installed tests/.stamp-servers
	$(BIN)/python -m pytest

tests/.stamp-servers: tests/npm/package.json tests/npm/package-lock.json tests/requirements-servers.txt $(BIN)/.installed
	cd tests/npm && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pip install -q -r tests/requirements-servers.txt
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(BIN)/.installed tests/.stamp-servers
	$(BIN)/python -m bench.core

clean:
	rm -rf $(VENV) tests/npm/node_modules tests/.stamp-servers
