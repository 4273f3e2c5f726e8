"""On-disk tokenized preference splits: the hand-off between preference data preparation (THINK)
and preference training and evaluation (DO, REVIEW).

A paired split (task ``preference``: DPO, IPO, ORPO, SimPO) holds, for each example, the chosen
and the rejected sequence; an unpaired split (task ``unpaired``: KTO) holds one completion per
example and whether it is desirable. Each sequence is the whole rendered conversation (prompt and
answer) with ``labels`` equal to the token ids on the answer tokens and -100 elsewhere, so a
sequence's log-probability is the sum over its trained tokens, exactly as in supervised
fine-tuning. Samples are never packed: a pair's two sequences are compared with each other.

A split folder holds, for each part (``chosen`` and ``rejected``, or ``completion``),
``<part>_input_ids.npy`` and ``<part>_labels.npy`` (int32, every token of every example, example
after example) and ``<part>_lengths.npy`` (tokens in each example); an unpaired split also holds
``desirable.npy`` (int8, 1 for a desirable completion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from entity_training import InputError, Problem
from plugins.data.encoding import IGNORE_INDEX
from plugins.data.tokenized import file_digest

PreferenceTask = Literal["preference", "unpaired"]
PARTS: dict[str, tuple[str, ...]] = {"preference": ("chosen", "rejected"), "unpaired": ("completion",)}
DESIRABLE = "desirable"


@dataclass(frozen=True)
class EncodedExample:
    """One example: per part, its token ids and labels (-100 where the token is not trained)."""

    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    desirable: bool | None = None  # unpaired (KTO) examples only
    source: dict[str, Any] = field(default_factory=dict)  # file and line, for messages


def task_of(parts: tuple[str, ...] | list[str]) -> PreferenceTask:
    for task, names in PARTS.items():
        if tuple(parts) == names:
            return task
    raise ValueError(f"an example's parts must be one of {list(PARTS.values())}, got {list(parts)}")


def write_preference_split(folder: Path, examples: list[EncodedExample], task: PreferenceTask) -> dict[str, Any]:
    """Write ``examples`` into ``folder``; return a manifest entry (files with digests, counts)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for part in PARTS[task]:
        ids = [example.parts[part][0] for example in examples]
        labels = [example.parts[part][1] for example in examples]
        arrays[f"{part}_input_ids"] = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        arrays[f"{part}_labels"] = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        arrays[f"{part}_lengths"] = np.asarray([len(i) for i in ids], dtype=np.int32)
    if task == "unpaired":
        arrays[DESIRABLE] = np.asarray([bool(example.desirable) for example in examples], dtype=np.int8)
    files = {}
    for name, array in arrays.items():
        path = folder / f"{name}.npy"
        np.save(path, array.astype(np.int8 if name == DESIRABLE else np.int32, copy=False))
        stat = path.stat()
        files[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_digest(path)}
    parts = PARTS[task]
    return {
        "task": task,
        "files": files,
        "rows": len(examples),
        "tokens": int(sum(arrays[f"{part}_input_ids"].size for part in parts)),
        "trained_tokens": int(sum((arrays[f"{part}_labels"] != IGNORE_INDEX).sum() for part in parts)),
    }


class PreferenceDataset:
    """The examples of a split: ``ds[i]`` -> ``{"<part>_input_ids": [...], "<part>_labels": [...], ...}``
    (plus ``"desirable": bool`` for an unpaired split)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(
                Problem(
                    f"the tokenized preference data {self.folder} no longer exists (the tokenized cache removes "
                    "its least recently used entries, or it was deleted). Run again without --resume to "
                    "tokenize it again.",
                    file=str(self.folder),
                )
            )
        present = {path.stem for path in self.folder.glob("*_lengths.npy")}
        self.task = task_of(
            tuple(part for part in ("chosen", "rejected", "completion") if f"{part}_lengths" in present)
        )
        self._parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        rows = None
        for part in PARTS[self.task]:
            ids, labels = (
                np.load(self.folder / f"{part}_{name}.npy", mmap_mode="r") for name in ("input_ids", "labels")
            )
            lengths = np.load(self.folder / f"{part}_lengths.npy")
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            if offsets[-1] != len(ids) or len(ids) != len(labels) or rows not in (None, len(lengths)):
                raise ValueError(f"{self.folder}: the {part} arrays disagree in length (a broken cache entry)")
            rows = len(lengths)
            self._parts[part] = (ids, labels, offsets)
        self._rows = rows or 0
        self.desirable = np.load(self.folder / f"{DESIRABLE}.npy") if self.task == "unpaired" else None

    def __len__(self) -> int:
        return self._rows

    def lengths(self, part: str) -> np.ndarray:
        return np.diff(self._parts[part][2])

    def longest(self) -> tuple[int, int]:
        """(tokens of the longest sequence, trained tokens of the longest answer) over every part:
        what a batch padded to its longest sequence can reach (the memory plan reads them)."""
        sequence = answer = 0
        for _, labels, offsets in self._parts.values():
            if len(offsets) < 2:
                continue
            trained = np.add.reduceat((labels != IGNORE_INDEX).astype(np.int32), offsets[:-1])
            sequence = max(sequence, int(np.diff(offsets).max()))
            answer = max(answer, int(trained.max()))
        return sequence, answer

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        example: dict[str, Any] = {}
        for part, (ids, labels, offsets) in self._parts.items():
            start, end = offsets[index], offsets[index + 1]
            example[f"{part}_input_ids"] = ids[start:end].tolist()
            example[f"{part}_labels"] = labels[start:end].tolist()
        if self.desirable is not None:
            example["desirable"] = bool(self.desirable[index])
        return example


def load_preference_split(path: str | Path) -> PreferenceDataset:
    """Open a tokenized preference split folder (the ``train``/``validation`` paths of ``dataset.tokenized``
    when its ``task`` is ``preference`` or ``unpaired``)."""
    return PreferenceDataset(path)
