# Two commands do everything on a fresh machine: `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE := data/sample
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: help env lock sample reproduce test test-fast lint bench accuracy lab clean

help:
	@echo "make reproduce  - environment, sample data, every notebook, figures/ and results/"
	@echo "make test       - environment, lint, the whole test suite (notebooks included)"
	@echo "make bench      - benchmark table (benchmarks/latest.md)"
	@echo "make accuracy   - counting accuracy, SYNTHETIC held-out and tuning sites (3 min)"
	@echo "make lab        - JupyterLab on notebooks/"

# The environment: created if missing, installed from the lock file only.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (toolkit)" > /dev/null
	@touch $(STAMP)

env: $(STAMP)

# Regenerate the lock from pyproject.toml (maintainers only; commit the result).
lock:
	rm -rf .venv-lock && $(PYTHON_SYS) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -U pip setuptools wheel
	.venv-lock/bin/pip install --quiet -e ".[notebooks,test]"
	{ echo "# Exact versions installed by 'make env' (Python 3.11). Regenerate with 'make lock'."; \
	  .venv-lock/bin/pip freeze --all | grep -vE '^(-e |railyard-toolkit)'; } > requirements.lock
	rm -rf .venv-lock

# The synthetic sample: generated deterministically, checked against data/sample_manifest.json.
sample: $(STAMP)
	$(PY) -m toolkit synth --default $(SAMPLE) --verify

reproduce: sample
	$(PY) -m toolkit.reproduce --sample $(SAMPLE)

test: $(STAMP)
	$(PY) -m ruff check toolkit tests notebooks benchmarks
	$(PY) -m ruff format --check toolkit tests benchmarks
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check toolkit tests notebooks benchmarks
	$(PY) -m ruff format --check toolkit tests benchmarks

bench: sample
	$(PY) -m benchmarks.run --sample $(SAMPLE) --out benchmarks/latest.md

accuracy: sample
	$(PY) -m benchmarks.accuracy --tuning --sample $(SAMPLE) --out benchmarks/accuracy.md

lab: $(STAMP) sample
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf notebooks/executed figures/*.png figures/*.pdf results .pytest_cache
