"""Checkpoint folders: publish atomically, verify, find the newest complete one, prune.

A checkpoint is written by the Trainer into a staging folder, verified, then renamed to
``checkpoints/checkpoint-{step}``: a crash mid-write leaves only a staging folder, never a
half-written checkpoint under the real name. A checkpoint damaged afterwards (a truncated file,
a missing state file) is detected by ``checkpoint_problems`` and skipped when resuming.

Under FSDP with ``SHARDED_STATE_DICT`` the weights and the optimizer state are torch distributed
checkpoints instead (``pytorch_model_fsdp_0/``, ``optimizer_0/``: one ``.distcp`` file per rank and
a ``.metadata`` file that the coordinating rank writes once every rank has written its part).
Under DeepSpeed the optimizer state is one file per rank in the folder that ``latest`` names
(``global_step{N}/``); ZeRO-3 keeps its weight shards there too, beside the gathered weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".staging"
TRAINER_STATE = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
OPTIMIZER = "optimizer.pt"
_RESUMPTION_FILES = ("scheduler.pt", TRAINER_STATE)
SHARDED_WEIGHTS = "pytorch_model_fsdp_0"
SHARDED_OPTIMIZER = "optimizer_0"
DEEPSPEED_LATEST = "latest"


def checkpoint_step(path: Path) -> int | None:
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def _safetensors_problem(path: Path) -> str | None:
    """Check the header is readable JSON and the file holds every tensor it declares."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > size - 8:
                return f"{path.name}: header longer than the file"
            header = json.loads(handle.read(header_length))
    except (OSError, struct.error, ValueError) as exc:
        return f"{path.name}: unreadable header ({exc})"
    data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_length + data_end > size:
        return f"{path.name}: truncated ({size} bytes, needs {8 + header_length + data_end})"
    return None


def _sharded_problems(folder: Path) -> list[str]:
    """A distributed checkpoint folder: its metadata and a non-empty shard per rank that wrote one."""
    if not (folder / ".metadata").is_file():
        return [f"{folder.name}/.metadata is missing (the sharded save did not finish)"]
    shards = sorted(folder.glob("*.distcp"))
    if not shards:
        return [f"{folder.name} holds no .distcp shard"]
    return [f"{folder.name}/{shard.name} is empty" for shard in shards if shard.stat().st_size == 0]


def _deepspeed_problems(folder: Path) -> list[str]:
    """DeepSpeed's per-rank optimizer state, in the folder its ``latest`` file names."""
    tag = (folder / DEEPSPEED_LATEST).read_text(encoding="utf-8").strip()
    states = sorted((folder / tag).glob("*optim_states.pt"))
    if not states:
        return [f"{tag}/ holds no DeepSpeed optimizer state (*optim_states.pt)"]
    return [
        f"{tag}/{state.name} is truncated or not a torch archive" for state in states if not zipfile.is_zipfile(state)
    ]


def _optimizer_problems(folder: Path) -> list[str]:
    if (folder / SHARDED_OPTIMIZER).is_dir():
        return _sharded_problems(folder / SHARDED_OPTIMIZER)
    if (folder / DEEPSPEED_LATEST).is_file():
        return _deepspeed_problems(folder)
    return [] if (folder / OPTIMIZER).is_file() else [f"{OPTIMIZER} is missing"]


def _weight_problems(folder: Path) -> list[str]:
    if (folder / SHARDED_WEIGHTS).is_dir():
        return _sharded_problems(folder / SHARDED_WEIGHTS)
    present = [name for name in _WEIGHT_FILES if (folder / name).exists()]
    if not present:
        return [f"no weights ({' or '.join(_WEIGHT_FILES)})"]
    problems = []
    for tensor_file in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(tensor_file)
        if problem:
            problems.append(problem)
    return problems


def checkpoint_problems(folder: Path) -> list[str]:
    """What makes a checkpoint unusable for resuming; an empty list means it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = _weight_problems(folder) + _optimizer_problems(folder)
    for name in _RESUMPTION_FILES:
        if not (folder / name).is_file():
            problems.append(f"{name} is missing")
    for pickle_file in (OPTIMIZER, "scheduler.pt"):
        path = folder / pickle_file
        if path.is_file() and not zipfile.is_zipfile(path):
            problems.append(f"{pickle_file} is truncated or not a torch archive")
    state = folder / TRAINER_STATE
    if state.is_file():
        try:
            json.loads(state.read_text(encoding="utf-8"))["global_step"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{TRAINER_STATE} is unreadable ({exc})")
    if not list(folder.glob("rng_state*.pth")):
        problems.append("rng_state.pth is missing")
    return problems


def newest_complete_checkpoint(root: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that passes verification; each broken newer one is reported and skipped."""
    for folder in reversed(list_checkpoints(root)):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder
        warn(f"skipping checkpoint {folder.name}, which is incomplete or corrupt: {'; '.join(problems)}")
    return None


def publish_checkpoint(staged: Path, root: Path) -> Path:
    """Verify a staged checkpoint and move it under its final name in one rename."""
    problems = checkpoint_problems(staged)
    if problems:
        raise RuntimeError(f"the checkpoint just written to {staged} failed verification: {'; '.join(problems)}")
    target = Path(root) / staged.name
    if target.exists():  # a re-run of the same step (after an OOM retry): replace the old copy
        shutil.rmtree(target)
    os.replace(staged, target)
    return target


def prune_checkpoints(root: Path, keep: int, best_step: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and the best one; returns what was deleted."""
    folders = list_checkpoints(root)
    kept = set(folders[-keep:]) if keep > 0 else set()
    kept.update(p for p in folders if best_step is not None and checkpoint_step(p) == best_step)
    deleted = [p for p in folders if p not in kept]
    for folder in deleted:
        shutil.rmtree(folder, ignore_errors=True)
    return deleted


def best_step_of(folder: Path) -> int | None:
    """The step with the lowest validation loss, as recorded in a checkpoint's trainer state."""
    try:
        state = json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state.get("best_global_step")
