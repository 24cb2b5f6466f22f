# musictext — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all bench compile submit helm lint clean system-deps venv

# Debian packages (FluidSynth + a General MIDI soundfont for the synthetic corpus).
system-deps:
	@missing=$$(for p in $$(grep -v '^\s*#' requirements/apt.txt); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The virtual environment, refreshed whenever a requirements file or pyproject.toml changes.
$(STAMP): requirements/base.txt requirements/dev.txt $(CONSTRAINTS) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/dev.txt
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps -e .
	@touch $@

venv: system-deps $(STAMP)

demo: venv
	$(VENV)/bin/musictext run --local $(ARGS)

test: venv lint
	$(PY) -m pytest -m "not slow" -q $(ARGS)

# Slow tests too, and the real MuQ-MuLan tests in their own environment (muq needs transformers<5).
MUQ_VENV := .venv-muq
$(MUQ_VENV)/.installed: tools/muq-test-env.sh requirements/audio.txt $(CONSTRAINTS)
	PYTHON=$(PYTHON) tools/muq-test-env.sh $(MUQ_VENV)
	@touch $@

test-all: venv lint $(MUQ_VENV)/.installed
	$(PY) -m pytest -q $(ARGS)
	PYTHONPATH=python $(MUQ_VENV)/bin/python -m pytest -q tests/test_muq_mulan.py

# Pyflakes-class errors only (undefined names, unused imports/variables): real bugs, not style;
# then the import contracts in pyproject.toml (library free of Kubeflow, stages apart, in order).
lint: venv
	$(VENV)/bin/ruff check --select F python components pipelines tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint --failure-threshold info images/Dockerfile*

bench: venv
	@for b in tests/bench/bench_*.py; do m=$${b%.py}; echo "== $$b"; $(PY) -m $${m//\//.}; done

compile: venv
	$(VENV)/bin/musictext compile --output build/musictext.yaml $(ARGS)

# Compile, upload as a new pipeline version and start a run on a Kubeflow cluster (docs/ci.md):
# the cluster from KFP_* variables, ARGS = pipeline parameters as key=value (plus submit's
# options, e.g. --wait), COMPILE_ARGS = `musictext compile` options (e.g. --pipeline-root).
submit: venv
	$(VENV)/bin/musictext compile --output build/musictext.yaml $(COMPILE_ARGS)
	$(VENV)/bin/musictext submit --package build/musictext.yaml $(ARGS)

helm:
	tools/fetch-helm.sh

clean:
	rm -rf build .pytest_cache
