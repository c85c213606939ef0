"""What tests/conftest.py gives every test so that two pytest workers (`make test` runs
`pytest -n 2`) never share a place on disk: batchdrop's own directory is this session's."""

import os
from pathlib import Path

import pytest

from batchdrop_local import envfile


def test_batchdrop_home_is_a_directory_of_this_sessions(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = Path(os.environ[envfile.HOME_VARIABLE])
    assert home.is_dir()
    assert home.is_relative_to(tmp_path_factory.getbasetemp())
    assert envfile.default_path() == home / "local.env"
