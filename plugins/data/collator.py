"""Batch packed rows without padding waste: pad only to the longest row, isolate samples by mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from plugins.data.encoding import IGNORE_INDEX
from plugins.data.packing import additive_mask, block_causal_mask


class PackedCollator:
    """``rows -> {"input_ids", "labels", "position_ids", "attention_mask"}``, all [B, L] except the mask.

    The mask is BoolTensor[B, 1, L, L] (block-diagonal causal; right for sdpa). Pass
    ``mask_dtype`` (e.g. torch.float32) to get the additive float form that eager attention needs.
    """

    def __init__(self, pad_token_id: int, mask_dtype: torch.dtype | None = None):
        self.pad_token_id = int(pad_token_id)
        self.mask_dtype = mask_dtype

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        input_ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
        position_ids = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            size = len(row["input_ids"])
            input_ids[i, :size] = row["input_ids"]
            labels[i, :size] = row["labels"]
            position_ids[i, :size] = row["position_ids"]
            # Padding continues the last sample's positions; it is masked out anyway.
            position_ids[i, size:] = np.arange(length - size) + (position_ids[i, size - 1] + 1 if size else 0)
        mask = block_causal_mask([row["seq_lengths"] for row in rows], length)
        if self.mask_dtype is not None:
            mask = additive_mask(mask, self.mask_dtype)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
            "attention_mask": mask,
        }
