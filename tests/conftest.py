"""Test tiers come from the directory a test lives in: tests/unit, tests/integration, tests/e2e."""

import os
from pathlib import Path

import pytest

# What Lambda's environment always has when batchdrop's modules are imported: Powertools'
# Logger and Metrics are created at import (batchdrop.observability) and keep these values,
# so they are set here, before any test module imports them.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "batchdrop")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "batchdrop/tests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
