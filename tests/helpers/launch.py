"""Launch ``train.py`` on several CPU processes, as a user does: ``accelerate launch`` or ``torchrun``.

Each launch gets its own free rendezvous port, so that tests running beside each other on one
machine never join each other's process groups; ``OMP_NUM_THREADS=1`` keeps two processes from
fighting over two cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"
RUN_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "300", **extra}


def accelerate_command(config_file: str, workflow: Path, *train_args: str, processes: int = 2) -> list[str]:
    """``accelerate launch --config_file configs/accelerate/<config_file> --num_processes <processes>
    train.py --config <workflow>``."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config_file),
        "--num_processes", str(processes), "--main_process_port", str(free_port()),
        str(REPO / "train.py"), "--config", str(workflow), "--yes", *train_args,
    ]  # fmt: skip


def train_command(workflow: Path, *train_args: str) -> list[str]:
    """One process: ``python train.py --config <workflow>``."""
    return [sys.executable, str(REPO / "train.py"), "--config", str(workflow), "--yes", *train_args]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=env or launch_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def output_of(done: subprocess.CompletedProcess) -> str:
    return done.stdout[-4000:] + done.stderr[-4000:]
