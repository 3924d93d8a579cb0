# blindsum task runner. `make demo` and `make test` are the two commands a
# newcomer needs; both bootstrap .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_SRC := $(wildcard proto/blindsum/rpc/v1/*.proto)

.PHONY: all demo test lint typecheck protos protos-check pytest venv clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/blindsum demo

test: $(STAMP) protos-check lint typecheck pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Regenerate the committed protobuf/gRPC code and mypy stubs.
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py blindsum/rpc/v1

# Regenerate into a scratch folder and fail on any difference from what is committed.
protos-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(BIN)/python scripts/gen_protos.py $$tmp/blindsum/rpc/v1 && \
	diff -ru -x __pycache__ -x __init__.py $$tmp/blindsum/rpc/v1 blindsum/rpc/v1 && \
	rm -rf $$tmp && echo "protos-check: generated code is up to date"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
