"""Batch packed rows without padding waste: pad only to the longest row, isolate samples by mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from plugins.data.encoding import IGNORE_INDEX
from plugins.data.packing import additive_mask, block_causal_mask

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn")


class PackedCollator:
    """``rows -> {"input_ids", "labels", "position_ids", "attention_mask"}``, all [B, L] except the mask.

    How samples are kept apart depends on the model's attention implementation:
    ``sdpa`` (default): BoolTensor[B, 1, L, L], block-diagonal causal;
    ``eager``: the same mask in additive float form (eager attention adds the mask to the scores,
    so a boolean mask would silently be wrong);
    flash attention: no mask; transformers derives the variable-length kernel's sequence
    boundaries from the restarting ``position_ids``.
    """

    def __init__(self, pad_token_id: int, attn_implementation: str = "sdpa"):
        self.pad_token_id = int(pad_token_id)
        self.attn_implementation = attn_implementation

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
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
        }
        if self.attn_implementation in VARLEN_ATTENTION:
            return batch
        mask = block_causal_mask([row["seq_lengths"] for row in rows], length)
        batch["attention_mask"] = additive_mask(mask, torch.float32) if self.attn_implementation == "eager" else mask
        return batch
