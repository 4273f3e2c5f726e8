"""One run per run directory: a lock file naming the owner's pid.

A second run into the same directory is refused while the owner lives. ``--resume`` may take
over the lock of a run whose process is gone (killed, machine rebooted).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from entity_training.errors import ConfigError, Problem

LOCK_FILE = "run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run_dir: Path, *, take_over: bool = False, enabled: bool = True):
        self.path = Path(run_dir) / LOCK_FILE
        self.take_over = take_over
        self.enabled = enabled
        self._held = False

    def _read_owner(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = self._read_owner() if self.path.exists() else None
        if owner is not None:
            pid = owner.get("pid")
            same_host = owner.get("host") in (None, socket.gethostname())
            if isinstance(pid, int) and pid != os.getpid() and same_host and _pid_alive(pid):
                raise ConfigError(
                    Problem(
                        f"another run (pid {pid}) is using this run directory; wait for it to finish, stop it, "
                        "or choose another --output",
                        file=str(self.path.parent),
                    )
                )
            if not self.take_over:
                raise ConfigError(
                    Problem(
                        f"a previous run (pid {pid}) did not finish cleanly here; pass --resume to continue it",
                        file=str(self.path.parent),
                    )
                )
        self.path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
        self._held = True

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
