# convlens: `make demo` sets everything up and runs the main job; `make test` sets up and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup browser test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH)
	touch $(STAMP)

# Debian's Chromium drives the browser tests (Playwright uses it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(BIN)/ruff check src tests benchmarks tools

test: setup browser lint
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/convlens report chelsea coffee camera stereo_motorcycle --out $(OUT)/report --json
	$(BIN)/python -m convlens.scan.demo $(OUT)/digits
	$(BIN)/convlens report --scan $(OUT)/digits/scan --filter-channels 64 --out $(OUT)/atlas

# The peers (torch-cam, Captum, Lucent) install beside the pinned torch for the benchmarks only;
# Lucent without its declared dependencies (torchvision would bring another torch).
bench: setup
	$(BIN)/python -m pip install -q $(TORCH) -e '.[bench]'
	$(BIN)/python -m pip install -q --no-deps 'torch-lucent>=0.1.8'
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
