"""``<run_dir>/batches.jsonl``: a short digest of every micro-batch, one line per optimizer step.

``{"step": 3, "micro_batches": ["9f2c...", "41ab..."]}``: sha256 over each micro-batch's token ids
and labels (every ``*input_ids`` and ``*labels`` tensor, so preference batches too), 16 hex
digits. Two runs that trained on the same batches in the same order have equal files, which is
how an exact resume is checked. A resumed run first drops the lines past the step it resumes
from (the killed run may have logged steps its checkpoint does not hold), so the file always
reads as the history of the model that exists. Only the main process writes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from entity_training.memory import atomic_write_text

BATCHES_FILE = "batches.jsonl"
DIGEST_CHARS = 16


def batch_digest(inputs: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(inputs):
        if name.endswith(("input_ids", "labels")):
            tensor = inputs[name].detach().cpu().contiguous()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:DIGEST_CHARS]


def read_batch_digests(run_dir: Path) -> dict[int, list[str]]:
    """step -> its micro-batch digests, from a run directory's ``batches.jsonl``."""
    return {record["step"]: record["micro_batches"] for record in _records(Path(run_dir) / BATCHES_FILE)}


def _records(path: Path) -> list[dict[str, Any]]:
    """The complete lines of ``path``; a line cut by a kill mid-write ends the list."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


class BatchDigests(TrainerCallback):
    """Collects the digests of a step's micro-batches (``add``, from the trainer) and writes them at its end."""

    def __init__(self, run_dir: Path, *, write: bool):
        self.path = Path(run_dir) / BATCHES_FILE
        self.write = write
        self.pending: list[str] = []

    def add(self, inputs: dict[str, Any]) -> None:
        if self.write:
            self.pending.append(batch_digest(inputs))

    def on_train_begin(self, args, state, control, **kwargs):
        self.pending = []
        if self.write and self.path.exists():
            kept = [record for record in _records(self.path) if record["step"] <= state.global_step]
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def on_step_end(self, args, state, control, **kwargs):
        if self.write:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, "micro_batches": self.pending}) + "\n")
        self.pending = []
