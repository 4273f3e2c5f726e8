"""batches.jsonl (plugins/training/batch_digests.py): a digest per micro-batch, one line per step,
cut back to the resumed step when a run resumes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from plugins.training.batch_digests import BATCHES_FILE, BatchDigests, batch_digest, read_batch_digests  # noqa: E402


def _batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (2, 8), generator=generator)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones(2, 1, 8, 8, dtype=torch.bool)}


def test_the_digest_covers_token_ids_and_labels_only():
    batch = _batch(0)
    assert batch_digest(batch) == batch_digest(_batch(0)) and len(batch_digest(batch)) == 16
    assert batch_digest(batch) != batch_digest(_batch(1))
    assert batch_digest({**batch, "attention_mask": ~batch["attention_mask"]}) == batch_digest(batch)
    changed = batch["labels"].clone()
    changed[0, 3] = -100
    assert batch_digest({**batch, "labels": changed}) != batch_digest(batch)
    # Preference batches name their sequences chosen_input_ids, rejected_labels, ...
    assert batch_digest({"chosen_input_ids": batch["input_ids"]}) != batch_digest({"chosen_input_ids": changed})


def _train(callback: BatchDigests, first_step: int, last_step: int, micro_batches: int = 2) -> None:
    state = SimpleNamespace(global_step=first_step)
    callback.on_train_begin(None, state, None)
    for step in range(first_step + 1, last_step + 1):
        for micro in range(micro_batches):
            callback.add(_batch(step * 10 + micro))
        state.global_step = step
        callback.on_step_end(None, state, None)


def test_a_resumed_run_drops_the_steps_past_its_checkpoint_and_logs_them_again(tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    _train(BatchDigests(straight, write=True), 0, 6)
    killed = tmp_path / "killed"
    killed.mkdir()
    _train(BatchDigests(killed, write=True), 0, 5)
    with (killed / BATCHES_FILE).open("a") as handle:
        handle.write('{"step": 6, "micro_')  # killed in the middle of a line
    _train(BatchDigests(killed, write=True), 3, 6)  # resumed from checkpoint-3

    assert read_batch_digests(killed) == read_batch_digests(straight)
    assert list(read_batch_digests(straight)) == [1, 2, 3, 4, 5, 6]
    lines = (killed / BATCHES_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(len(digests) == 2 for digests in read_batch_digests(killed).values())


def test_only_the_writing_process_writes(tmp_path):
    _train(BatchDigests(tmp_path, write=False), 0, 2)
    assert not (tmp_path / BATCHES_FILE).exists()
