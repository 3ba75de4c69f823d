# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What running needs, and on top of it the tools the tests and checks need (Playwright,
# cfn-lint, hadolint, ...: several hundred MB that `make run` does not wait for).
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: install install-run run test test-fast lint format bench stack stack-flask stack-down haproxy-config clean

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install-run: $(RUN_STAMP)
install: $(STAMP)

## Serve the shop on http://127.0.0.1:5000 (embedded default: SQLite + in-process fakeredis)
run: install-run
	$(BIN)/flask --app shop run --host 127.0.0.1 --port 5000

## The whole suite; real-server tests run when PostgreSQL and Redis answer
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Only tests/app: in process, on SQLite and fakeredis, no server started, on every core
test-fast: install
	$(BIN)/python -m pytest tests/app -n auto $(PYTEST_ARGS)

## ruff, ruff format and mypy (the same as the git hooks: .venv/bin/pre-commit install)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The benchmark (bench/; needs wrk: apt-get install wrk). BENCHMARKS.md is rewritten.
bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

## PostgreSQL primary + replica, Redis, 3 shop instances behind HAProxy on http://127.0.0.1:8000
stack: install
	$(BIN)/python deploy/stack/stack.py up

## A `flask --app shop` command on the stack: make stack-flask ARGS="user grant you@example.com admin"
stack-flask: install
	$(BIN)/python deploy/stack/stack.py flask $(ARGS)

## Stop what `make stack` started (STACK_PURGE=1 also deletes its data under .stack/)
stack-down: install
	$(BIN)/python deploy/stack/stack.py down

## Rewrite deploy/compose/haproxy.cfg from deploy/haproxy/haproxy.cfg.j2 (commit the result)
haproxy-config: install-run
	$(BIN)/python -m deploy.haproxy

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
