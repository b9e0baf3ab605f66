# The two commands: `make run` and `make test`. Each sets up what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run build test lint unit integration e2e protos bench clean compose-up compose-down

# Every member of the workspace, editable, and the dev tools, in one pip command.
MEMBERS := libs/api services/common services/chat services/builder services/deployer cli
$(STAMP): requirements.txt requirements-dev.txt constraints.txt $(MEMBERS:%=%/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

## run: all three services in one process on the embedded default (SQLite in ./.appforge,
## in-process bus, local deploys): chat 50051, builder 50052, deployer 50053, apps on 8080
run: $(STAMP)
	$(BIN)/appforge up

## build: build and deploy PROMPT on the services of `make run`, without activating .venv
PROMPT ?= build a calculator
build: $(STAMP)
	$(BIN)/appforge build "$(PROMPT)"

## compose-up: docker-compose.yml built and started, ready on the published ports
## (Docker: docker compose up -d --build --wait; podman: its start order, one step at a time)
compose-up: $(STAMP)
	$(BIN)/python scripts/compose_up.py up

## compose-down: the compose stack and its volumes removed
compose-down: $(STAMP)
	$(BIN)/python scripts/compose_up.py down --volumes

## test: generated-code drift, lint, types, then every suite (what .ci/run calls)
test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

## protos: regenerate libs/api/src/appforge/api from protos/
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	$(BIN)/python bench/chat_upsert.py

clean:
	rm -rf $(VENV) .appforge .mypy_cache .ruff_cache .pytest_cache
