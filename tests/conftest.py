"""Shared test fixtures."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from entity_training.context import STRICT_MEMORY_ENV
from entity_training.testing import make_context as make_plugin_context

# In tests a plugin that reads or writes a memory key it does not declare fails (subprocesses too).
os.environ.setdefault(STRICT_MEMORY_ENV, "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture
def make_context(tmp_path):
    """``entity_training.testing.make_context`` with the test's ``tmp_path`` as the default ``run_dir``."""
    return functools.partial(make_plugin_context, run_dir=tmp_path)


@pytest.fixture
def shared_datasets() -> Path:
    """The third-party datasets beside the repository; tests using them skip on a user's clone."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent (it exists in CI, not in a user's clone)")
    return SHARED_DATASETS
