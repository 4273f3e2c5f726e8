"""On-disk tokenized splits: flat numpy arrays that load in milliseconds (memory-mapped).

A split folder holds ``input_ids.npy`` and ``labels.npy`` (int32, every token of every row, row
after row), ``seq_lengths.npy`` (length of each sample, in row order) and ``row_samples.npy``
(number of samples in each row). ``load_tokenized`` gives rows as the training contract expects.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from entity_training import InputError, Problem
from plugins.data.packing import position_ids_for

ARRAYS = ("input_ids", "labels", "seq_lengths", "row_samples")


def write_split(
    folder: Path, rows: list[list[int]], input_ids: list[np.ndarray], labels: list[np.ndarray]
) -> dict[str, Any]:
    """Write the samples grouped as ``rows`` (lists of sample indices); return a manifest entry."""
    folder.mkdir(parents=True, exist_ok=True)
    order = [index for row in rows for index in row]
    arrays = {
        "input_ids": np.concatenate([input_ids[i] for i in order]) if order else np.zeros(0, np.int32),
        "labels": np.concatenate([labels[i] for i in order]) if order else np.zeros(0, np.int32),
        "seq_lengths": np.asarray([len(input_ids[i]) for i in order], dtype=np.int32),
        "row_samples": np.asarray([len(row) for row in rows], dtype=np.int32),
    }
    files = {}
    for name, array in arrays.items():
        path = folder / f"{name}.npy"
        np.save(path, array.astype(np.int32, copy=False))
        stat = path.stat()
        files[path.name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_digest(path)}
    return {
        "files": files,
        "rows": len(rows),
        "samples": len(order),
        "tokens": int(arrays["input_ids"].size),
        "trained_tokens": int((arrays["labels"] != -100).sum()),
    }


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class TokenizedDataset:
    """Rows of a tokenized split: ``len(ds)`` and ``ds[i]`` -> input_ids, labels, position_ids, seq_lengths."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(
                Problem(
                    f"the tokenized dataset {self.folder} no longer exists: the tokenized cache removes its least "
                    "recently used entries beyond data_preparation.cache_max_entries, or it was deleted. Start the "
                    "run again without --resume to tokenize again, or raise cache_max_entries.",
                    file=str(self.folder),
                )
            )
        # The tokens stay on disk (memory-mapped); the per-sample and per-row counts are small and
        # read whole, so the offsets are computed on plain arrays (no memmap wrapping on each operation).
        self.input_ids, self.labels = (np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS[:2])
        self.seq_lengths, self.row_samples = (np.load(self.folder / f"{name}.npy") for name in ARRAYS[2:])
        self._sample_offsets = np.zeros(len(self.row_samples) + 1, dtype=np.int64)
        np.cumsum(self.row_samples, out=self._sample_offsets[1:])
        self._token_offsets = np.zeros(len(self.seq_lengths) + 1, dtype=np.int64)
        np.cumsum(self.seq_lengths, out=self._token_offsets[1:])
        if self._sample_offsets[-1] != len(self.seq_lengths) or self._token_offsets[-1] != len(self.input_ids):
            raise ValueError(f"{self.folder}: the arrays disagree in length (a broken cache entry)")

    def __len__(self) -> int:
        return len(self.row_samples)

    def row_lengths(self) -> np.ndarray:
        """Tokens in each row (for length-grouped batching or memory planning)."""
        return np.diff(self._token_offsets[self._sample_offsets])

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        first, last = self._sample_offsets[index], self._sample_offsets[index + 1]
        start, end = self._token_offsets[first], self._token_offsets[last]
        seq_lengths = self.seq_lengths[first:last]
        return {
            "input_ids": self.input_ids[start:end].tolist(),
            "labels": self.labels[start:end].tolist(),
            "position_ids": position_ids_for(seq_lengths).tolist(),
            "seq_lengths": seq_lengths.tolist(),
        }


def load_tokenized(path: str | Path) -> TokenizedDataset:
    """Open a tokenized split folder (the ``train``/``validation`` paths of ``dataset.tokenized``)."""
    return TokenizedDataset(path)
