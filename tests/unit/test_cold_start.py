"""What a handler's import loads: the cold-start check that needs no clock. Each handler is
imported in a fresh interpreter, as Lambda does at init, and must leave the heavy packages
it uses later (the SDK and its HTTP and model stack) to the first call that needs them, and
never load local tooling. The timings are bench/cold_start.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("submit", "checker")
# Packages, or modules with everything under them, that `import app` must not load.
NOT_AT_IMPORT = (
    "anthropic",  # about 1.5 s even from .pyc; batchdrop.adapters.batches imports it on first use
    "httpx",
    "httpx2",  # the SDK's HTTP client
    "pydantic",  # the SDK's models
    "batchdrop_local",  # local tooling is never shipped, so it must never be imported
    "aws_lambda_powertools.utilities.data_classes",  # some thirty event modules for one S3Event
    "yaml",  # read only when a records file's pipeline is YAML
)

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_import(function: str) -> set[str]:
    """sys.modules after `import app` of functions/<function> in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "functions" / function)],
        cwd=ROOT / "functions" / function,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_handler_import_leaves_heavy_packages_to_first_use(function: str) -> None:
    loaded = loaded_by_import(function)
    assert "app" in loaded
    assert "batchdrop.wiring" in loaded  # the handler really imported the layer's code
    early = sorted(
        module for module in loaded for heavy in NOT_AT_IMPORT if module == heavy or module.startswith(heavy + ".")
    )
    assert early == [], f"functions/{function}/app.py loads at import what it should load on first use: {early}"
