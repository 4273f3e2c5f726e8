"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest
from helpers.preference import write_preference_data


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """``dataset.tokenized`` of 8 training and 4 validation preference pairs (tests/helpers/preference.py)."""
    return write_preference_data(tmp_path_factory.mktemp("pairs"))
