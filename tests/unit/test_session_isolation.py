"""What tests/conftest.py gives every test so that two pytest workers (`make test` runs
`pytest -n 2`) neither share a place on disk nor fail each other's tests by their load:
batchdrop's own directory is this session's, and Hypothesis sets no deadline on an example."""

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop_local import envfile


def test_batchdrop_home_is_a_directory_of_this_sessions(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = Path(os.environ[envfile.HOME_VARIABLE])
    assert home.is_dir()
    assert home.is_relative_to(tmp_path_factory.getbasetemp())
    assert envfile.default_path() == home / "local.env"


@given(st.integers(0, 1))
def test_a_slow_example_is_not_failed_for_its_time(value: int) -> None:
    assert settings.default.deadline is None
    time.sleep(0.21 + value / 100)  # over Hypothesis's default deadline of 200 ms
