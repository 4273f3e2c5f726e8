"""Kill a real run from outside at a moment seen in its run directory, as a user's crash would.

``kill_when`` starts a command, waits until ``reached(run_dir)`` is true (events.jsonl, the
checkpoints folder), sends SIGKILL and waits for the process to end. The predicates below name the
moments the kill/resume tests use.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POLL_S = 0.005


def events(run_dir: Path) -> list[dict]:
    """The events written so far (a line being written is left out)."""
    try:
        lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            break
    return found


def training_result(run_dir: Path) -> dict:
    """The ``training.result`` a run left in its memory.json."""
    return json.loads((run_dir / "memory.json").read_text(encoding="utf-8"))["entries"]["training.result"]


def plugin_started(name: str) -> Callable[[Path], bool]:
    return lambda run_dir: any(e["type"] == "plugin_start" and e.get("plugin") == name for e in events(run_dir))


def checkpoint_published(step: int, folder: str = "checkpoints") -> Callable[[Path], bool]:
    return lambda run_dir: (run_dir / folder / f"checkpoint-{step}" / "trainer_state.json").exists()


def training_step_logged(step: int) -> Callable[[Path], bool]:
    return lambda run_dir: any(
        e["type"] == "metrics" and (e.get("step") or e["values"].get("step")) == step for e in events(run_dir)
    )


def kill_when(
    command: Sequence[str], *, cwd: Path, run_dir: Path, reached: Callable[[Path], bool], timeout: float, log: Path
) -> None:
    """Run ``command`` until ``reached(run_dir)``, then SIGKILL it; fail if it ends before that."""
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while process.poll() is None and not reached(run_dir) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before the kill point: {log}")
        process.send_signal(signal.SIGKILL)
        process.wait()
