"""Test tiers come from the directory a test lives in: tests/unit, tests/integration, tests/e2e."""

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# What Lambda's environment always has when batchdrop's modules are imported: Powertools'
# Logger and Metrics are created at import (batchdrop.observability) and keep these values,
# so they are set here, before any test module imports them.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "batchdrop")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "batchdrop/tests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Hypothesis fails an example that runs over 200 ms by default: that measures the machine's
# load (two pytest workers side by side, and whatever else the machine runs), not the code. No
# test here states a time budget that way; a test that set its own deadline would keep it.
settings.register_profile("batchdrop", deadline=None)
settings.load_profile("batchdrop")

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _batchdrop_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """batchdrop's own directory ($BATCHDROP_HOME: where `batchdrop local up` writes its env file
    and every command looks for it) is one of this session's, for the tests and the processes
    they start: never the user's, and never that of another pytest worker (`pytest -n 2`)
    running beside this one. A test that needs its own sets it as before."""
    home = tmp_path_factory.mktemp("batchdrop-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHDROP_HOME", str(home))
        yield home


@pytest.fixture(scope="module", autouse=True)
def _collect_what_the_module_left() -> Iterator[None]:
    """Garbage left by a module (a client or socket never closed) is collected as the module
    ends, so a ResourceWarning it raises fails that module's last test rather than whichever
    test of another module the collector happens to run in."""
    yield
    gc.collect()
