"""Tokenized preference splits round-trip through their folder, paired and unpaired."""

from __future__ import annotations

import numpy as np
import pytest

from entity_training import InputError
from plugins.data.preference_tokenized import EncodedExample, load_preference_split, write_preference_split


def _sequence(prompt: list[int], answer: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(prompt + answer, dtype=np.int32)
    labels = np.asarray([-100] * len(prompt) + answer, dtype=np.int32)
    return ids, labels


def test_pairs_round_trip_with_their_masks(tmp_path):
    examples = [
        EncodedExample({"chosen": _sequence([1, 2, 3], [7, 8]), "rejected": _sequence([1, 2, 3], [9])}),
        EncodedExample({"chosen": _sequence([4], [5, 6, 7]), "rejected": _sequence([4], [8, 8, 8, 8])}),
    ]
    manifest = write_preference_split(tmp_path / "train", examples, "preference")
    assert manifest["rows"] == 2 and manifest["task"] == "preference"
    assert manifest["tokens"] == 5 + 4 + 4 + 5 and manifest["trained_tokens"] == 2 + 1 + 3 + 4
    split = load_preference_split(tmp_path / "train")
    assert split.task == "preference" and len(split) == 2
    assert split[0] == {
        "chosen_input_ids": [1, 2, 3, 7, 8],
        "chosen_labels": [-100, -100, -100, 7, 8],
        "rejected_input_ids": [1, 2, 3, 9],
        "rejected_labels": [-100, -100, -100, 9],
    }
    assert split[-1]["rejected_input_ids"] == [4, 8, 8, 8, 8]
    assert split.lengths("chosen").tolist() == [5, 4]
    with pytest.raises(IndexError):
        split[2]


def test_unpaired_examples_keep_whether_they_are_desirable(tmp_path):
    examples = [
        EncodedExample({"completion": _sequence([1], [2])}, desirable=True),
        EncodedExample({"completion": _sequence([1], [3, 4])}, desirable=False),
    ]
    write_preference_split(tmp_path / "kto", examples, "unpaired")
    split = load_preference_split(tmp_path / "kto")
    assert split.task == "unpaired"
    assert [split[i]["desirable"] for i in range(2)] == [True, False]
    assert split[1]["completion_labels"] == [-100, 3, 4]


def test_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no longer exists"):
        load_preference_split(tmp_path / "gone")
