"""Packed training rows from streamed sources, with bounded memory and an exact, resumable state.

The pipeline, one sample at a time: the mixture picks a source (``MixtureScheduler`` when there
are several), its cursor reads and validates the next row, the row is rendered, tokenized and
masked (``encode_one``), it enters a shuffle buffer of ``shuffle_buffer`` samples (seeded), and the
sample the buffer gives back is packed best-fit into one of ``OPEN_ROWS`` open rows. Memory holds
the buffer and the open rows, never the dataset.

Exact resume: before each row is handed out, the whole state (cursor positions, mixture, RNG,
buffer, open rows, rows ready) is snapshotted by reference (samples are never changed once made,
so a snapshot costs a few list copies). The data loader reads ahead of training, so the
checkpoint asks for the snapshot at the number of rows training has consumed (``state_at``);
the last ``lookback`` snapshots are kept.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from entity_training import InputError, Problem
from plugins.data.encoding import IGNORE_INDEX, EncodedSamples
from plugins.data.packing import position_ids_for
from plugins.data.stream_reader import SourceCursor
from plugins.data.stream_spec import StreamSpec

# Open rows the packer fills at once: more fills rows better (fewer padding slots), each one more
# is one more row of samples held in memory. 8 leaves under 5% of slots empty on chat data.
OPEN_ROWS = 8
# Samples in a row that all come out untrainable (too long with truncation: drop, or no trained
# token): past this many, the data has nothing to train on and the run stops instead of spinning.
MAX_CONSECUTIVE_DROPS = 10_000

Sample = tuple[np.ndarray, np.ndarray, int]  # input_ids, labels (int32), source index
Encoder = Callable[[dict[str, Any]], EncodedSamples]


class PackedStream:
    """An endless iterator of packed rows (``input_ids``, ``labels``, ``position_ids``, ``seq_lengths``)."""

    def __init__(self, spec: StreamSpec, encode: Encoder, *, max_seq_length: int, packing: bool, lookback: int = 256):
        self.spec = spec
        self.encode = encode
        self.max_seq_length = max_seq_length
        self.packing = packing
        self.cursors = [SourceCursor(source, on_bad_rows=spec.on_bad_rows) for source in spec.sources]
        self.scheduler = _scheduler(spec)
        self.rng = random.Random(spec.seed)
        self.buffer: list[Sample] = []
        self.open_rows: list[list[Sample]] = []
        self.ready: deque[list[Sample]] = deque()
        self.rows_yielded = 0
        self.counts = {"samples": 0, "truncated": 0, "dropped_too_long": 0, "dropped_untrained": 0}
        self._snapshots: deque[dict[str, Any]] = deque(maxlen=lookback)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            while not self.ready:
                self._produce()
            self._snapshots.append(self.state_dict())
            row = self.ready.popleft()
            self.rows_yielded += 1
            yield packed_row(row)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state now, sharing the (immutable) samples: rows_yielded rows have been handed out."""
        return {
            "rows_yielded": self.rows_yielded,
            "cursors": [cursor.state_dict() for cursor in self.cursors],
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self.rng.getstate(),
            "buffer": list(self.buffer),
            "open_rows": [list(row) for row in self.open_rows],
            "ready": [list(row) for row in self.ready],
            "counts": dict(self.counts),
        }

    def state_at(self, rows: int) -> dict[str, Any]:
        """The state when exactly ``rows`` rows had been handed out (one of the last ``lookback``)."""
        for snapshot in reversed(self._snapshots):
            if snapshot["rows_yielded"] == rows:
                return snapshot
        if rows == self.rows_yielded:
            return self.state_dict()
        kept = [s["rows_yielded"] for s in self._snapshots]
        raise RuntimeError(f"no stream state at row {rows}: the stream keeps rows {kept[:1]}..{kept[-1:]}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cursor, cursor_state in zip(self.cursors, state["cursors"], strict=True):
            cursor.load_state_dict(cursor_state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.buffer = list(state["buffer"])
        self.open_rows = [list(row) for row in state["open_rows"]]
        self.ready = deque(list(row) for row in state["ready"])
        self.rows_yielded = state["rows_yielded"]
        self.counts = dict(state["counts"])
        self._snapshots.clear()

    def statistics(self) -> dict[str, Any]:
        """What was read so far: samples, cut and dropped ones, bad rows and passes per source, the mixture."""
        sources = {
            source.name: {"bad_rows": cursor.state.bad_rows, "passes_started": cursor.state.epoch + 1}
            for source, cursor in zip(self.spec.sources, self.cursors, strict=True)
        }
        realised = self.scheduler.realised() if self.scheduler is not None else None
        return {**self.counts, "rows_yielded": self.rows_yielded, "sources": sources, "mixture": realised}

    def close(self) -> None:
        for cursor in self.cursors:
            cursor.close()

    # -- the pipeline -----------------------------------------------------------------------
    def _produce(self) -> None:
        sample = self._next_sample()
        if len(self.buffer) < self.spec.shuffle_buffer:
            self.buffer.append(sample)
            return
        slot = self.rng.randrange(len(self.buffer))
        out, self.buffer[slot] = self.buffer[slot], sample
        self._pack(out)

    def _next_sample(self) -> Sample:
        for _ in range(MAX_CONSECUTIVE_DROPS):
            index = self._next_source()
            encoded = self.encode(self.cursors[index].next_conversation())
            self.counts["truncated"] += encoded.truncated
            self.counts["dropped_too_long"] += encoded.dropped_too_long
            self.counts["dropped_untrained"] += encoded.dropped_untrained
            if not encoded.input_ids:
                continue
            ids, labels = encoded.input_ids[0], encoded.labels[0]
            self.counts["samples"] += 1
            if self.scheduler is not None:
                trained = int((labels != IGNORE_INDEX).sum())
                self.scheduler.record(self.spec.sources[index].name, rows=1, trained_tokens=trained)
            return ids, labels, index
        raise InputError(
            Problem(
                f"{MAX_CONSECUTIVE_DROPS} streamed rows in a row left no trainable sample (longer than "
                "max_seq_length with truncation: drop, or no trained token). Raise max_seq_length, use truncation: "
                "right, or check train_on."
            )
        )

    def _next_source(self) -> int:
        if self.scheduler is None:
            return 0
        names = [source.name for source in self.spec.sources]
        return names.index(self.scheduler.next_source(names))

    def _pack(self, sample: Sample) -> None:
        if not self.packing:
            self.ready.append([sample])
            return
        size = len(sample[0])
        best, best_room = None, self.max_seq_length + 1
        for number, row in enumerate(self.open_rows):
            room = self.max_seq_length - _tokens(row)
            if size <= room < best_room:
                best, best_room = number, room
        if best is not None:
            self.open_rows[best].append(sample)
            if best_room == size:
                self.ready.append(self.open_rows.pop(best))
            return
        if len(self.open_rows) >= OPEN_ROWS:
            fullest = max(range(len(self.open_rows)), key=lambda n: _tokens(self.open_rows[n]))
            self.ready.append(self.open_rows.pop(fullest))
        self.open_rows.append([sample])


def packed_row(samples: list[Sample]) -> dict[str, Any]:
    """The row a collator takes, as ``TokenizedDataset`` gives it."""
    lengths = [len(ids) for ids, _, _ in samples]
    return {
        "input_ids": np.concatenate([ids for ids, _, _ in samples]),
        "labels": np.concatenate([labels for _, labels, _ in samples]),
        "position_ids": position_ids_for(lengths),
        "seq_lengths": lengths,
    }


def _tokens(row: list[Sample]) -> int:
    return sum(len(ids) for ids, _, _ in row)


def _scheduler(spec: StreamSpec):
    if len(spec.sources) == 1:
        return None
    from plugins.data.mixture import MixtureScheduler

    return MixtureScheduler({source.name: source.weight for source in spec.sources}, spec.mix_by)
