# blindsum task runner. `make demo` and `make test` are the two commands a
# newcomer needs; both bootstrap .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_SRC := $(wildcard proto/blindsum/rpc/v1/*.proto)

.PHONY: all demo test lint typecheck protos protos-check pytest venv clean chromium screenshot

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

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
