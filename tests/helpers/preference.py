"""Preference data for the training tests: prompts of random tokens, a chosen answer that counts up
from the prompt's last token, a rejected one that is random; written as ``dataset.tokenized``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from plugins.data.preference_tokenized import EncodedExample, write_preference_split


def _sequence(prompt: list[int], answer: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(prompt + answer, dtype=np.int32)
    labels = np.asarray([-100] * len(prompt) + answer, dtype=np.int32)
    return ids, labels


def _examples(count: int, *, unpaired: bool, seed: int = 0) -> list[EncodedExample]:
    """Prompts of random tokens; the chosen answer counts up from the prompt's last token in
    threes, the rejected one is random (for KTO: every other example is a rejected one)."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        prompt = [rng.randrange(10, 200) for _ in range(rng.randrange(4, 9))]
        chosen = [(prompt[-1] + 3 * i) % 200 + 10 for i in range(1, rng.randrange(6, 12))]
        rejected = [rng.randrange(10, 200) for _ in range(rng.randrange(6, 12))]
        if unpaired:
            desirable = index % 2 == 0
            parts = {"completion": _sequence(prompt, chosen if desirable else rejected)}
            examples.append(EncodedExample(parts=parts, desirable=desirable))
        else:
            examples.append(
                EncodedExample(parts={"chosen": _sequence(prompt, chosen), "rejected": _sequence(prompt, rejected)})
            )
    return examples


def write_preference_data(folder: Path, *, task: str = "preference") -> dict:
    """A ``dataset.tokenized`` entry of a preference task, with 8 training and 4 validation examples."""
    unpaired = task == "unpaired"
    entry = {"task": task, "max_seq_length": 32, "chat_template": None, "tokenizer": None, "cache_key": "test"}
    for split, count, seed in (("train", 8, 0), ("validation", 4, 1)):
        write_preference_split(folder / split, _examples(count, unpaired=unpaired, seed=seed), task)
        entry[split] = str(folder / split)
    return entry
