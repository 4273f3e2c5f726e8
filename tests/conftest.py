"""Shared test fixtures."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from helpers import context

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture
def make_context(tmp_path):
    """``helpers.context.make_context`` with the test's ``tmp_path`` as the default ``run_dir``."""
    return functools.partial(context.make_context, run_dir=tmp_path)


@pytest.fixture
def shared_datasets() -> Path:
    """The third-party datasets beside the repository; tests using them skip on a user's clone."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent (it exists in CI, not in a user's clone)")
    return SHARED_DATASETS
