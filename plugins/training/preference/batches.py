"""The preference splits as the Trainer's dataset, and their batches: each sequence padded on the
right to the batch's longest, never packed (a pair's two sequences are compared with each other)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from plugins.data.encoding import IGNORE_INDEX
from plugins.data.preference_tokenized import PARTS, load_preference_split

REFERENCE_LOGPS = "reference_logps"


class PreferenceRows(torch.utils.data.Dataset):
    """The examples of a tokenized preference split (plugins/data/preference_tokenized.py), with
    the reference log-probabilities of each part once ``reference`` is set ([examples, parts])."""

    def __init__(self, path: str):
        self.split = load_preference_split(path)
        self.task = self.split.task
        self.reference: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.split[index]
        if self.reference is not None:
            example[REFERENCE_LOGPS] = self.reference[index]
        return example


class PreferenceCollator:
    """Examples -> ``input_ids`` and ``labels`` [rows, longest]: the chosen sequences then the
    rejected ones of a paired split, the completions (and ``desirable``) of an unpaired one.

    No attention mask: with the padding on the right, causal attention never lets a real token see
    it, and the padding's own outputs are not scored; without a mask SDPA takes its causal kernel.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        parts = PARTS["preference"] if "chosen_input_ids" in examples[0] else PARTS["unpaired"]
        sequences = [
            (example[f"{part}_input_ids"], example[f"{part}_labels"]) for part in parts for example in examples
        ]
        length = max(len(ids) for ids, _ in sequences)
        input_ids = np.full((len(sequences), length), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(sequences), length), IGNORE_INDEX, dtype=np.int64)
        for row, (ids, row_labels) in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            labels[row, : len(ids)] = row_labels
        batch = {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}
        if "desirable" in examples[0]:
            batch["desirable"] = torch.tensor([example["desirable"] for example in examples], dtype=torch.bool)
        if REFERENCE_LOGPS in examples[0]:
            # In the rows' order: part after part.
            reference = np.stack([example[REFERENCE_LOGPS] for example in examples])
            batch[REFERENCE_LOGPS] = torch.from_numpy(reference.T.reshape(-1).astype(np.float32))
        return batch
