# AWS SAM CLI targets, included by the main Makefile after PYTHON, BIN, STAMP and PYENV_ROOT.
# SAM CLI lives in its own venv (.tools/sam), never in .venv: it pins boto3, click, cfn-lint
# and others to versions that would fight the app's.

SAM_VENV := .tools/sam
SAM_BIN := $(SAM_VENV)/bin
SAM_STAMP := $(SAM_VENV)/.installed
SAM := SAM_CLI_TELEMETRY=0 $(SAM_BIN)/sam
# `sam build` without Docker needs a python3.12 on PATH that satisfies the runtime;
# pyenv's shim does not unless that version is selected, so put its bin dir first.
SAM_PY_BIN := $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin) $(dir $(PYTHON)))
SAM_UV_VERSION := 0.13.9

.PHONY: sam template-lint build build-native sam-lock

$(SAM_STAMP): requirements/sam.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 not found; pass PYTHON=/path/to/python3.12" >&2; exit 1; }
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(SAM_UV_VERSION)
	$(SAM_BIN)/uv pip install --quiet --python $(SAM_BIN)/python --require-hashes -r requirements/sam.txt
	touch $@

sam: $(SAM_STAMP)

sam-lock: $(STAMP)
	$(BIN)/uv pip compile requirements/sam.in --python-version 3.12 --generate-hashes -o requirements/sam.txt

template-lint: $(STAMP) $(SAM_STAMP)
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint --template-file template.yaml

# The artifact ships bytecode. `sam build` ships none: it copies our code without *.pyc and
# __pycache__ and unzips the layer's wheels without compiling them, so every cold start would
# compile each module it imports from source, every time, as /var/task and /opt are read-only
# and nothing is kept (bench/cold_start.py measures both). `sam deploy` zips these build dirs
# whole, .pyc included.
# unchecked-hash, because a timestamp .pyc is valid only while its source keeps the mtime it
# recorded, and the zip `sam deploy` uploads keeps none (SAM stamps every entry 1980-01-01; zip
# stores 2 s steps at best): Lambda would find each .pyc stale and compile from source anyway.
# An unchecked-hash .pyc is used as it is, with no stat or hash of its source. That is safe here:
# `sam build` empties its build dir first and this step then compiles all of it, so a .pyc never
# outlives its source (and a second run rewrites the same bytes). Bytecode is per minor version:
# $(PYTHON) must be 3.12, the runtime's. -o 0: Lambda runs without -O. -s: a .pyc holds its path
# relative to the build dir, not this checkout's (tracebacks name the real file either way).
define compile-bytecode
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || { echo "error: $(PYTHON) is not Python 3.12, the runtime's; its bytecode would not load on Lambda" >&2; exit 1; }
	$(PYTHON) -m compileall -q -j 0 -o 0 --invalidation-mode unchecked-hash -s $(1) $(1)
endef

build: $(SAM_STAMP)
	PATH="$(SAM_PY_BIN):$$PATH" $(SAM) build --template-file template.yaml
	$(call compile-bytecode,.aws-sam/build)

# The same artifact built for x86_64, for measuring import times on this machine: the real one's
# native wheels (pydantic_core, …) are aarch64 and cannot be imported here. The template is
# copied with every arm64 made x86_64; --base-dir . because CodeUri paths are relative to the
# template's directory, which the copy is not in. The stamp, touched last, tells bench/cold_start.py
# the copy is complete; it rebuilds when a source is newer.
NATIVE_DIR := .aws-sam/native
build-native: $(SAM_STAMP)
	rm -f $(NATIVE_DIR)/.built
	mkdir -p $(NATIVE_DIR)
	sed 's/arm64/x86_64/g' template.yaml > $(NATIVE_DIR)/template.yaml
	PATH="$(SAM_PY_BIN):$$PATH" $(SAM) build --template-file $(NATIVE_DIR)/template.yaml --base-dir . --build-dir $(NATIVE_DIR)/build
	$(call compile-bytecode,$(NATIVE_DIR)/build)
	touch $(NATIVE_DIR)/.built
