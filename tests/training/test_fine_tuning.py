"""FineTuningPlugin (DO) on a tiny Llama: every method learns, metrics and final model are
written, checkpoints resume to the same loss, corrupt ones are skipped, OOM is retried."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.training import build_tiny_model_dir, packed_rows, run_do_plugin, write_tokenized

from entity_training import ConfigError, PluginError, RunInterrupted, Stage
from entity_training.testing import make_context
from plugins import memory_keys
from plugins.fine_tuning import FineTuningPlugin
from plugins.training.checkpoints import checkpoint_problems, list_checkpoints, newest_complete_checkpoint


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    # The same 8 rows every epoch: a "repeated small batch" the model must learn.
    folder = tmp_path_factory.mktemp("tokenized")
    return write_tokenized(folder, packed_rows(8), packed_rows(4, seed=1), max_seq_length=64)


async def run_training(
    run_dir: Path, model: str, tokenized: dict, *, resume=False, events=None, cancel_at_step=None, **settings
):
    """TrainingConfig then FineTuning; ``cancel_at_step`` presses 'Ctrl-C' (the engine's cancel event)."""
    defaults = {"batch_size": 4, "logging_steps": 2, "save_steps": 4, "seed": 0}
    memory = await run_do_plugin(
        FineTuningPlugin({}), run_dir, model, tokenized, training={**defaults, **settings},
        resume=resume, events=events, cancel_at_step=cancel_at_step,
    )  # fmt: skip
    return memory.get(memory_keys.TRAINING_RESULT), memory


@pytest.mark.parametrize(("method", "learning_rate"), [("full", 3e-3), ("lora", 1e-2), ("dora", 1e-2), ("qlora", 1e-2)])
async def test_every_method_learns_a_repeated_batch(method, learning_rate, tiny_model, tokenized, tmp_path):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    events = []
    result, memory = await run_training(
        tmp_path, tiny_model, tokenized, events=events, training_method=method, learning_rate=learning_rate,
        max_steps=12, evaluation_steps=6, lr_scheduler="constant", lora_dropout=0.0,
    )  # fmt: skip
    losses = [record["loss"] for record in result["log_history"] if "loss" in record]
    assert losses[-1] < losses[0] * 0.9, losses
    assert result["best_eval_loss"] < result["initial_eval_loss"]
    assert result["steps"] == 12 and result["method"] == method
    assert result["trained_tokens"] > 0 and result["tokens_per_second"] > 0 and result["peak_memory_bytes"] > 0
    final = Path(result["final_model_path"])
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (final / weights).is_file() and (final / "tokenizer_config.json").is_file()
    assert json.loads((final / "training_config.json").read_text())["training_method"] == method
    assert memory.get(memory_keys.TRAINING_MEMORY_PLAN).peak_bytes > 0
    assert {e["type"] for e in events} >= {"metrics", "progress"}


@pytest.mark.parametrize(
    ("method", "modules_to_save"), [("lora", ["lm_head", "embed_tokens"]), ("full", [])], ids=["lora", "full"]
)
async def test_the_evaluation_measures_the_final_models_last_validation_loss(
    method, modules_to_save, tiny_model, tmp_path
):
    """One validation loss (issue #16): the evaluation's loss of the saved final model equals the
    training's last validation loss of the same weights, with uneven rows batched differently."""
    from plugins.evaluation import EvaluationPlugin

    validation = packed_rows(2, seed=1) + packed_rows(1, length=10, samples_per_row=1, seed=2)
    tokenized = write_tokenized(tmp_path / "tokenized", packed_rows(8), validation, max_seq_length=64)
    result, memory = await run_training(
        tmp_path / "run", tiny_model, tokenized, training_method=method, modules_to_save=modules_to_save,
        learning_rate=1e-2, max_steps=4, batch_size=2, evaluation_steps=2, lora_dropout=0.1, precision="fp32",
    )  # fmt: skip
    evaluations = [record for record in result["log_history"] if "eval_loss" in record]
    assert [record["step"] for record in evaluations] == [0, 2, 4]
    assert result["final_eval_loss"] == evaluations[-1]["eval_loss"]
    assert result["best_eval_loss"] == min(record["eval_loss"] for record in evaluations)
    assert result["best_eval_step"] in (0, 2, 4)

    review = make_context(Stage.REVIEW, tmp_path / "run", memory)
    await EvaluationPlugin(
        {"metrics": ["loss"], "num_samples": 0, "compare_with_base": False, "batch_size": 3}
    ).execute(review)
    evaluated = memory.get(memory_keys.EVALUATION_REPORT)["metrics"]["fine_tuned"]
    assert evaluated["eval_tokens"] == 2 * 62 + 9
    assert evaluated["loss"] == pytest.approx(result["final_eval_loss"], rel=1e-4)


async def test_metrics_files_and_checkpoints(tiny_model, tokenized, tmp_path):
    result, _ = await run_training(
        tmp_path, tiny_model, tokenized, max_steps=12, save_total_limit=2, evaluation_steps=4
    )
    with open(tmp_path / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row["loss"] for row in rows) and any(row["eval_loss"] for row in rows)
    assert all(row["step"] for row in rows)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("tokens_per_second" in record for record in records)
    folders = list_checkpoints(tmp_path / "checkpoints")
    # The newest two, plus the best one if it is older.
    assert [f.name for f in folders][-2:] == ["checkpoint-8", "checkpoint-12"]
    assert all(checkpoint_problems(folder) == [] for folder in folders)
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists() or len(folders) == 3
    assert result["steps"] == 12


async def test_resumed_run_ends_like_an_uninterrupted_one(tiny_model, tokenized, tmp_path):
    settings = {"max_steps": 12, "evaluation_steps": 6, "lora_dropout": 0.1}
    reference, _ = await run_training(tmp_path / "straight", tiny_model, tokenized, **settings)

    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        await run_training(interrupted_dir, tiny_model, tokenized, cancel_at_step=5, **settings)
    assert newest_complete_checkpoint(interrupted_dir / "checkpoints", print) is not None

    resumed, _ = await run_training(interrupted_dir, tiny_model, tokenized, resume=True, **settings)
    assert resumed["resumed_from"] is not None  # the checkpoint written on 'Ctrl-C', after step 5
    assert int(resumed["resumed_from"].rsplit("-", 1)[1]) >= 5
    assert resumed["steps"] == reference["steps"] == 12
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert resumed["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], rel=1e-5)


async def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tiny_model, tokenized, tmp_path):
    await run_training(tmp_path, tiny_model, tokenized, max_steps=8, save_total_limit=5)
    newest = tmp_path / "checkpoints" / "checkpoint-8"
    adapter = newest / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-100])  # truncated, as by a crash or a full disk
    assert any("truncated" in problem for problem in checkpoint_problems(newest))
    events = []
    result, _ = await run_training(
        tmp_path, tiny_model, tokenized, events=events, max_steps=8, resume_from_checkpoint="auto"
    )
    assert result["resumed_from"].endswith("checkpoint-4")
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any("skipping checkpoint checkpoint-8" in message for message in warnings)
    assert result["steps"] == 8


async def test_resume_without_checkpoints_starts_fresh_and_says_so(tiny_model, tokenized, tmp_path):
    events = []
    threads_before = torch.get_num_threads()
    result, _ = await run_training(tmp_path, tiny_model, tokenized, resume=True, events=events, max_steps=2)
    assert result["resumed_from"] is None and result["steps"] == 2
    assert any("starting training from the beginning" in e.get("message", "") for e in events)
    # torch_threads: auto logs its choice, and the process gets its thread count back afterwards.
    assert any(e.get("message", "").startswith("torch threads: ") for e in events)
    assert torch.get_num_threads() == threads_before


async def test_explicit_resume_path_must_be_a_complete_checkpoint(tiny_model, tokenized, tmp_path):
    broken = tmp_path / "checkpoints" / "checkpoint-3"
    broken.mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot resume from") as caught:
        await run_training(tmp_path, tiny_model, tokenized, max_steps=2, resume_from_checkpoint=str(broken))
    assert caught.value.exit_code == 2


async def test_out_of_memory_halves_the_batch_and_retries(tiny_model, tokenized, tmp_path, monkeypatch):
    from plugins.training.trainer import PackedTrainer

    original = PackedTrainer.training_step

    def fail_on_big_batches(self, model, inputs, num_items_in_batch=None):
        if inputs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(PackedTrainer, "training_step", fail_on_big_batches)
    events = []
    result, _ = await run_training(tmp_path, tiny_model, tokenized, events=events, max_steps=4)
    assert (result["batch_size"], result["gradient_accumulation_steps"]) == (2, 2)
    assert any("out of memory: retrying" in e.get("message", "") for e in events)


async def test_out_of_memory_every_time_lists_the_knobs(tiny_model, tokenized, tmp_path, monkeypatch):
    from plugins.training.trainer import PackedTrainer

    def always_fail(self, model, inputs, num_items_in_batch=None):
        raise torch.OutOfMemoryError("out of memory (simulated)")

    monkeypatch.setattr(PackedTrainer, "training_step", always_fail)
    with pytest.raises(PluginError, match="max_seq_length") as caught:
        await run_training(tmp_path, tiny_model, tokenized, max_steps=4)
    assert "gradient_checkpointing" in str(caught.value)


def test_checkpoint_without_resumption_state_is_incomplete(tmp_path):
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    problems = checkpoint_problems(folder)
    assert any("optimizer.pt" in p for p in problems) and any("trainer_state.json" in p for p in problems)
    shutil.rmtree(folder)
