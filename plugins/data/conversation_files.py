"""The dataset splits on disk: ``<run_dir>/data/<name>.jsonl``, one conversation a line.

Memory holds a small ``ConversationsFile`` (path, rows, sha256) under ``dataset.train`` and
``dataset.validation``, not the conversations: ``memory.json`` stays small and is rewritten after
every stage in milliseconds. A plugin that changes the data writes a new file and remembers its
entry. Reading checks the file against its hash, so a file edited behind the run's back is an
error, never a stale tokenized cache entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from entity_training import InputError, Problem
from entity_training.memory import atomic_write_text

DATA_FOLDER = "data"


class ConversationsFile(BaseModel):
    """A split of the dataset written by ``write_conversations``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="The JSON Lines file, absolute.")
    rows: int = Field(ge=0, description="Conversations in the file.")
    sha256: str = Field(description="Hash of the file's bytes, checked when it is read.")


def write_conversations(run_dir: Path, name: str, conversations: Sequence[dict[str, Any]]) -> ConversationsFile:
    """Write ``conversations`` atomically to ``<run_dir>/data/<name>.jsonl`` and describe the file."""
    path = (Path(run_dir) / DATA_FOLDER / f"{name}.jsonl").resolve()
    atomic_write_text(path, "".join(json.dumps(conversation) + "\n" for conversation in conversations))
    with open(path, "rb") as handle:  # the bytes as written: text mode may translate line ends
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    return ConversationsFile(path=str(path), rows=len(conversations), sha256=sha256)


def conversations_file(value: ConversationsFile | Mapping[str, Any]) -> ConversationsFile:
    """The typed entry of a memory value: memory.json restores it as the dict of its fields.

    Raises InputError for anything else (a run saved before the splits moved to files held lists).
    """
    try:
        return ConversationsFile.model_validate(value)
    except ValidationError as exc:
        raise InputError(
            Problem(f"a dataset split in memory is not a file entry ({exc.errors()[0]['msg']}); run without --resume.")
        ) from exc


def read_conversations(value: ConversationsFile | Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The conversations of a ``dataset.train``/``dataset.validation`` entry; none for a missing entry.

    Raises InputError when the file is missing or no longer matches its hash.
    """
    if value is None:
        return []
    entry = conversations_file(value)
    try:
        data = Path(entry.path).read_bytes()
    except OSError as exc:
        raise InputError(Problem(f"the dataset split cannot be read ({exc}); run without --resume.")) from exc
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise InputError(
            Problem(
                "the dataset split changed after it was written; run without --resume, or write "
                "changes through plugins.data.conversation_files.",
                file=entry.path,
            )
        )
    return [json.loads(line) for line in data.splitlines()]


def validation_or_train(
    validation: ConversationsFile | Mapping[str, Any] | None, train: ConversationsFile | Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The validation conversations, or the training ones when there are none: prompts to try a model on."""
    return read_conversations(validation) or read_conversations(train)
