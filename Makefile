# The commands the README gives. `make test` and `make demo` work on a fresh clone:
# the first target that needs the venv builds it from the pinned lock.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_VERSION := 3.12
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
# The venv runs the same Python as the Lambda runtime (python3.12 in template.yaml).
PYTHON ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/$(PY_VERSION).*/bin/python$(PY_VERSION)) $(shell command -v python$(PY_VERSION) 2>/dev/null))
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv lock lint test build-check test-unit test-integration test-e2e demo soak bench emulator clean

include mk/sam.mk
include mk/iac.mk
include mk/deploy.mk
include mk/browser.mk

help:
	@echo "make demo   - run a batch through the local emulator and print the results"
	@echo "make test   - lint and run every test tier (builds .venv on first use)"
	@echo "make soak   - 40 files x 500 requests under every emulator fault; fails if a request is lost or sent twice"
	@echo "make bench  - every benchmark against the local stack, baselines beside ours, one table (bench/latest.md)"
	@echo "make lint   - ruff, then mypy --strict on the layer and both handlers"
	@echo "make template-lint - cfn-lint and sam validate --lint on template.yaml"
	@echo "make build  - sam build, without Docker, then compile the artifact's bytecode"
	@echo "make build-native - the same artifact for this machine's architecture (bench/cold_start.py imports it)"
	@echo "make lock   - recompile requirements/dev.txt, then the layer's hashed lock from the same versions"
	@echo "make template-scan - checkov and cfn-lint's serverless rules on template.yaml (own venv, .tools/iac)"
	@echo "make browser - install headless Chromium (Debian's chromium) for the report's browser test, if missing"
	@echo "make clean  - remove the venv and caches"

$(STAMP): requirements/dev.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python $(PY_VERSION) not found (looked in $(PYENV_ROOT)/versions and PATH); install it or pass PYTHON=/path/to/python$(PY_VERSION)" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode -r requirements/dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(STAMP)

lock:
	$(BIN)/uv pip compile requirements/dev.in --python-version $(PY_VERSION) --generate-hashes -o requirements/dev.txt
	$(MAKE) layer-lock

# The layer's lock, for Lambda's platform (arm64, Python 3.12), hashed, and constrained to the
# versions of the tested dev lock: what `sam build` installs is what the tests ran
# (tests/unit/test_template.py compares the two, build-check compares the built layer).
.PHONY: layer-lock
layer-lock: $(STAMP)
	$(BIN)/uv pip compile layers/common/requirements.in --python-version $(PY_VERSION) \
		--python-platform aarch64-manylinux2014 --generate-hashes --constraint requirements/dev.txt \
		-o layers/common/requirements.txt

# mypy takes its files and settings from [tool.mypy] in pyproject.toml: --strict over layers/ and functions/.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest on two workers (pytest-xdist); pyproject.toml's --dist loadfile keeps each test file
# whole on one worker. `make test PYTEST_WORKERS=0` runs it in one process, as test-* below do.
PYTEST_WORKERS ?= 2
test: lint template-lint template-scan build-check browser
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# `sam build` works here without Docker; its artifact holds both handlers and the layer.
# (The layer is built for arm64, so it is checked by its layout, not imported on x86_64.)
build-check: build
	test -f .aws-sam/build/SubmitFunction/app.py
	test -f .aws-sam/build/CheckerFunction/app.py
	test -f .aws-sam/build/CommonLayer/python/batchdrop/services/intake.py
	test -f .aws-sam/build/CommonLayer/python/batchdrop/prices.json
	test -d .aws-sam/build/CommonLayer/python/anthropic
	test -f .aws-sam/build/SubmitFunction/__pycache__/app.cpython-312.pyc
	test -f .aws-sam/build/CheckerFunction/__pycache__/app.cpython-312.pyc
	test -f .aws-sam/build/CommonLayer/python/batchdrop/services/__pycache__/intake.cpython-312.pyc
	test -f .aws-sam/build/CommonLayer/python/anthropic/__pycache__/__init__.cpython-312.pyc
	$(PYTHON) mk/check_layer_versions.py .aws-sam/build/CommonLayer/python layers/common/requirements.txt

test-unit: $(STAMP)
	$(BIN)/pytest -m unit

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

test-e2e: $(STAMP)
	$(BIN)/pytest -m e2e

demo: $(STAMP)
	$(BIN)/python -m batchdrop_local.demo

# 40 files of 500 requests (shards of 200) under every emulator fault; exits non-zero if a
# request is lost or sent twice (batchdrop_local/soak.py). About 6 minutes.
soak: $(STAMP)
	$(BIN)/python -m batchdrop_local.soak --jobs 40 --requests 500 --shard-requests 200 --seed 7

# Figures, not tests: prints one table (and writes bench/latest.md) of submit, results,
# checker, cold start, cost, the local stack's own footprint and records mode's outputs and
# intake (bench/records.py: within 1.5x native mode on the same requests), each
# beside baselines measured in the same run. About 9 to 10 minutes (after `sam build`). Each goal is judged yes/NO (bench/goals.py: submit within 1.5x the minimal
# stream-and-post path and 2x the parse floor, results at least half a plain copy's throughput,
# and the memory, checker, cold-start and cost goals); exits 1 if one was missed, else 0.
# `make bench-quick` (python -m bench --quick) is a smoke run of a minute or two on small inputs:
# the same table, no goal judged, exit 0 unless it crashed, bench/latest.md left as it is.
bench: $(STAMP) build
	$(BIN)/python -m bench

.PHONY: bench-quick
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

emulator: $(STAMP)
	$(BIN)/batchdrop emulator --host 127.0.0.1 --port 8765 --latency 2

clean:
	rm -rf $(VENV) .tools .aws-sam .pytest_cache .ruff_cache .mypy_cache .hypothesis
