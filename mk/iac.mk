# Template scanners, included by the main Makefile after PYTHON, BIN and STAMP. checkov and
# cfn-lint's serverless rules live in their own venv (.tools/iac), never in .venv: checkov pins
# boto3, pydantic and others to versions that would fight the app's. Installed from the hashed
# lock requirements/iac.txt, so every machine runs the same scanners.

IAC_VENV := .tools/iac
IAC_BIN := $(IAC_VENV)/bin
IAC_STAMP := $(IAC_VENV)/.installed
IAC_UV_VERSION := 0.13.9

.PHONY: iac iac-lock template-scan

$(IAC_STAMP): requirements/iac.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 not found; pass PYTHON=/path/to/python3.12" >&2; exit 1; }
	rm -rf $(IAC_VENV)
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(IAC_UV_VERSION)
	$(IAC_BIN)/uv pip install --quiet --python $(IAC_BIN)/python --require-hashes -r requirements/iac.txt
	touch $@

iac: $(IAC_STAMP)

iac-lock: $(STAMP)
	$(BIN)/uv pip compile requirements/iac.in --python-version 3.12 --generate-hashes -o requirements/iac.txt

# cfn-lint with the serverless rules (-a: the rules module cfn-lint-serverless installs), then
# checkov on the CloudFormation frameworks. Every check either passes or is skipped in
# template.yaml with its reason beside it (checkov's Metadata skips, cfn-lint's ignore_checks).
# checkov runs offline: no platform upload, no version check, no remote guidelines.
template-scan: $(IAC_STAMP)
	$(IAC_BIN)/cfn-lint -a cfn_lint_serverless.rules -- template.yaml
	BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false $(IAC_BIN)/checkov --quiet --compact \
		--skip-download --framework cloudformation --file template.yaml
