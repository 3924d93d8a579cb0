# blindsum task runner. `make demo` and `make test` are the two commands a
# newcomer needs; both bootstrap .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_SRC := $(wildcard proto/blindsum/rpc/v1/*.proto)

.PHONY: all demo test lint typecheck protos protos-check pytest venv clean chromium screenshot bench fuzz

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/blindsum demo

test: $(STAMP) chromium protos-check lint typecheck pytest

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

# Headless Chromium for the HTML report's browser test. Installs Debian's package when
# no Chromium is found and apt-get is usable (root or passwordless sudo); otherwise says
# in one line why it is skipped and succeeds, and the browser test then skips itself.
chromium:
	@if { [ -n "$$BLINDSUM_CHROMIUM" ] && [ -x "$$BLINDSUM_CHROMIUM" ]; } || \
	    command -v chromium >/dev/null 2>&1 || \
	    command -v chromium-browser >/dev/null 2>&1 || \
	    command -v google-chrome >/dev/null 2>&1; then \
		exit 0; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: skipped: not installed and no apt-get on this machine"; exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "chromium: skipped: not installed and apt-get needs root or passwordless sudo"; exit 0; \
	fi; \
	echo "chromium: installing Debian's chromium with apt-get"; \
	if $$sudo apt-get update -qq >/dev/null 2>&1 && \
	   $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       --no-install-recommends chromium >/dev/null 2>&1; then \
		echo "chromium: installed"; \
	else \
		echo "chromium: skipped: apt-get could not install chromium (offline?)"; \
	fi

# The README's screenshot: run the demo, then load its report.html in headless
# Chromium (no console errors, every chart rendered) and save docs/report.png.
screenshot: $(STAMP) chromium
	@tmp=$$(mktemp -d) && \
	$(BIN)/blindsum demo --workdir $$tmp/demo && \
	$(BIN)/python scripts/screenshot_report.py $$tmp/demo/report.html docs/report.png && \
	rm -rf $$tmp && echo "screenshot: wrote docs/report.png"

# Benchmarks against peers (issue 5), not part of `make test`. They run in their own
# venv, so the peers (flwr, mpyc) never become project dependencies. The pinned
# requirements go in first, one by one if the set fails (a peer that cannot install is
# then skipped with its reason), and the project last: flwr 1.41 declares protobuf<7
# but runs with the project's protobuf 7, which that last step restores (pip then warns
# about flwr's declared bound). The project goes in with its postgres extra: scenario
# `scale` runs its aggregator on a throwaway PostgreSQL database (127.0.0.1:5432; it
# skips, saying why, when none answers). `make bench BENCH_ARGS=--full` runs the whole
# grid; `make bench BENCH_ARGS='--only scale,scale-memory'` runs issue 11's scale runs.
BENCH_VENV  := .venv-bench
BENCH_BIN   := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	@test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	@if ! $(BENCH_BIN)/python -m pip install --quiet -r bench/requirements.txt; then \
		echo "bench: bench/requirements.txt did not install as a whole; trying one by one"; \
		sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' bench/requirements.txt | while read -r req; do \
			if $(BENCH_BIN)/python -m pip install --quiet "$$req" >/dev/null 2>&1; then \
				echo "bench: installed $$req"; \
			else \
				echo "bench: skipped $$req: pip could not install it; its scenario will say so"; \
			fi; \
		done; \
	fi
	$(BENCH_BIN)/python -m pip install --quiet -e '.[postgres]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench $(BENCH_ARGS)

# The fuzz targets with many more examples than `make test` gives them (bounded:
# FUZZ_EXAMPLES per target). A crash found becomes an @example on its target.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	BLINDSUM_FUZZ=1 BLINDSUM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
