# AWS SAM CLI targets, included by the main Makefile after PYTHON, BIN, STAMP and PYENV_ROOT.
# SAM CLI lives in its own venv (.tools/sam), never in .venv: it pins boto3, click, cfn-lint
# and others to versions that would fight the app's (../shared/LOCAL-TOOLING.md §1).

SAM_VENV := .tools/sam
SAM_BIN := $(SAM_VENV)/bin
SAM_STAMP := $(SAM_VENV)/.installed
SAM := SAM_CLI_TELEMETRY=0 $(SAM_BIN)/sam
# `sam build` without Docker needs a python3.12 on PATH that satisfies the runtime;
# pyenv's shim does not unless that version is selected, so put its bin dir first.
SAM_PY_BIN := $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin) $(dir $(PYTHON)))
SAM_UV_VERSION := 0.13.9

.PHONY: sam template-lint build sam-lock

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

build: $(SAM_STAMP)
	PATH="$(SAM_PY_BIN):$$PATH" $(SAM) build --template-file template.yaml
