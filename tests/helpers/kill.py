"""Kill a real run from outside at a moment seen in its run directory, as a user's crash would.

``kill_when`` starts a command, waits until ``reached(run_dir)`` is true (events.jsonl, the
checkpoints folder), sends SIGKILL to it and every process it started (a launcher's ranks: torchrun
starts each in a session of its own, so they outlive their launcher otherwise) and waits for them. The predicates below name the
moments the kill/resume tests use.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
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
    command: Sequence[str],
    *,
    cwd: Path,
    run_dir: Path,
    reached: Callable[[Path], bool],
    timeout: float,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``command`` until ``reached(run_dir)``, then SIGKILL it and its descendants; fail if it
    ends before that."""
    import psutil

    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while process.poll() is None and not reached(run_dir) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before the kill point: {log}")
        launched = psutil.Process(process.pid)
        members = [*launched.children(recursive=True), launched]
        for member in members:
            member.send_signal(signal.SIGKILL)
        psutil.wait_procs(members, timeout=30)
        process.wait()
