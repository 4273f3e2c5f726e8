"""Sample packing: best-fit-decreasing bins, per-sample position ids and the block-diagonal mask.

Why the mask: with several samples in one row, a plain causal mask lets a token attend to the
earlier samples of its row. Restarting ``position_ids`` does not prevent that under sdpa/eager
attention (see tests/data/test_packing.py), so the collator passes a 4-D block-diagonal causal mask.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group sample indices into bins of total length <= ``capacity``.

    Longest samples first; each goes into the fullest bin that still has room for it. Bins keep
    their samples in placement order; a sample longer than ``capacity`` is an error (truncate first).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.max() > capacity:
        raise ValueError(f"a sample of {int(lengths.max())} tokens does not fit a bin of {capacity}")
    bins: list[list[int]] = []
    # Bins grouped by their remaining room; rooms are integers <= capacity, so the sorted list of
    # distinct rooms stays short and bisect finds the tightest fit in O(log capacity).
    bins_with_room: dict[int, list[int]] = {}
    rooms: list[int] = []
    for index in np.argsort(-lengths, kind="stable").tolist():
        size = int(lengths[index])
        slot = bisect.bisect_left(rooms, size)
        if slot == len(rooms):
            bins.append([index])
            _add_room(bins_with_room, rooms, capacity - size, len(bins) - 1)
            continue
        room = rooms[slot]
        number = bins_with_room[room].pop()
        if not bins_with_room[room]:
            del bins_with_room[room], rooms[slot]
        bins[number].append(index)
        _add_room(bins_with_room, rooms, room - size, number)
    return bins


def _add_room(bins_with_room: dict[int, list[int]], rooms: list[int], room: int, number: int) -> None:
    if room == 0:  # a full bin takes nothing more
        return
    if room not in bins_with_room:
        bins_with_room[room] = []
        bisect.insort(rooms, room)
    bins_with_room[room].append(number)


def packing_efficiency(total_tokens: int, rows: int, max_seq_length: int) -> float:
    """Real tokens over the token slots of the rows (1.0 = no padding at all)."""
    return total_tokens / (rows * max_seq_length) if rows else 0.0


def position_ids_for(seq_lengths: Sequence[int]) -> np.ndarray:
    """Positions restarting at 0 for each sample: [3, 2] -> [0, 1, 2, 0, 1]."""
    lengths = np.asarray(seq_lengths, dtype=np.int64)
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def block_causal_mask(seq_lengths_per_row: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """BoolTensor[B, 1, L, L]: True where a query may attend a key (earlier token, same sample).

    Padding after the samples of a row attends only to itself, so no softmax row is empty (no NaN).
    """
    import torch

    segments = np.empty((len(seq_lengths_per_row), length), dtype=np.int64)
    for row, lengths in enumerate(seq_lengths_per_row):
        ids = np.repeat(np.arange(len(lengths)), lengths)
        # Each padding position is its own segment: negative numbers never equal a sample's.
        segments[row] = np.concatenate([ids, -1 - np.arange(length - len(ids))])
    segment = torch.from_numpy(segments)
    same_sample = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (same_sample & causal).unsqueeze(1)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float form of a boolean mask (0 = attend, dtype min = blocked).

    transformers passes a ready 4-D mask to the attention function unchanged; eager attention
    adds it to the scores, so it needs this form, while sdpa takes the boolean one.
    """
    import torch

    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
