"""Run ``train.py`` in a subprocess, the way a user does, with the engine's toy plugins importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE_TESTS = REPO / "tests" / "engine"  # sample_plugins: the engine's toy plugins


def run_train(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ENGINE_TESTS), str(REPO)]),
        "COLUMNS": "300",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
