"""PreferenceTrainingPlugin (DO) on a tiny Llama: every loss learns a repeated batch, full training
too; the adapter's reference is the base with the adapter disabled; bad settings and SFT data stop
with exit 2; a run stopped by Ctrl-C and resumed ends like an uninterrupted one."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.preference import write_preference_data
from helpers.training import build_tiny_model_dir, run_do_plugin
from helpers.workflows import line_of, step, write_workflow

from entity_training import ConfigError, InputError, RunInterrupted
from entity_training.workflow import load_workflow
from plugins import memory_keys
from plugins.data.preference_tokenized import EncodedExample, write_preference_split
from plugins.preference_training import PreferenceTrainingPlugin
from plugins.training.preference.trainer import PreferenceTrainer

PLUGIN = "plugins.preference_training.PreferenceTrainingPlugin"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    return write_preference_data(tmp_path_factory.mktemp("unpaired"), task="unpaired")


async def run_preference(
    run_dir: Path,
    model: str,
    tokenized: dict,
    *,
    plugin=None,
    resume=False,
    events=None,
    cancel_at_step=None,
    **settings,
):
    """TrainingConfig, the memory plan, then PreferenceTraining; ``cancel_at_step`` presses 'Ctrl-C'."""
    defaults = {"batch_size": 4, "logging_steps": 2, "save_steps": 4, "seed": 0, "lora_dropout": 0.0,
                "lr_scheduler": "constant", "learning_rate": 1e-2, "max_steps": 10}  # fmt: skip
    memory = await run_do_plugin(
        PreferenceTrainingPlugin(plugin or {}), run_dir, model, tokenized, training={**defaults, **settings},
        resume=resume, events=events, cancel_at_step=cancel_at_step,
    )  # fmt: skip
    return memory.get(memory_keys.TRAINING_RESULT)


def bare_trainer(model, tmp_path: Path) -> PreferenceTrainer:
    """A PreferenceTrainer (DPO) on CPU around ``model``, for calling its methods directly."""
    from transformers import TrainingArguments

    from plugins.training.callbacks import TokenCounter

    return PreferenceTrainer(
        model=model,
        loss_settings=PreferenceTrainingPlugin.ConfigModel(),
        args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[]),
        tokens=TokenCounter(),
        checkpoint_dir=tmp_path / "checkpoints",
        save_total_limit=1,
    )


def _train_records(result: dict) -> list[dict]:
    return [record for record in result["log_history"] if "loss" in record]


@pytest.mark.parametrize(("loss", "beta"), [("dpo", 0.1), ("ipo", 0.1), ("orpo", 0.1), ("simpo", 2.0), ("kto", 0.1)])
async def test_every_loss_learns_a_repeated_batch(loss, beta, tiny_model, pairs, unpaired, tmp_path):
    events = []
    data = unpaired if loss == "kto" else pairs
    result = await run_preference(tmp_path, tiny_model, data, plugin={"loss": loss, "beta": beta}, events=events)
    records = _train_records(result)
    assert records[-1]["loss"] < records[0]["loss"] * 0.9, [r["loss"] for r in records]
    assert result["steps"] == 10 and result["loss"] == loss and result["method"] == "lora"
    assert (Path(result["final_model_path"]) / "adapter_model.safetensors").is_file()
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(records[-1])
    assert records[-1]["rewards/margins"] > 0
    assert result["final_eval_loss"] is not None and "eval_rewards/accuracies" in result["log_history"][-2]
    metrics = [e for e in events if e["type"] == "metrics"]
    assert any("rewards/margins" in e["values"] for e in metrics)
    assert "rewards/margins" in (tmp_path / "metrics.jsonl").read_text()


@pytest.mark.parametrize("precompute", [False, True], ids=["frozen-copy", "precomputed"])
async def test_full_training_learns_with_a_frozen_or_precomputed_reference(precompute, tiny_model, pairs, tmp_path):
    result = await run_preference(
        tmp_path, tiny_model, pairs, plugin={"loss": "dpo", "precompute_ref_logps": precompute},
        training_method="full", learning_rate=1e-3,
    )  # fmt: skip
    records = _train_records(result)
    assert records[-1]["loss"] < records[0]["loss"] * 0.9, [r["loss"] for r in records]
    assert (Path(result["final_model_path"]) / "model.safetensors").is_file()


async def test_the_adapters_reference_is_the_base_with_the_adapter_disabled(tiny_model, pairs, tmp_path, monkeypatch):
    """No second model with an adapter, and the reference log-probabilities are the base model's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from plugins.training.preference.batches import PreferenceCollator, PreferenceRows
    from plugins.training.validation_loss import row_losses

    trainers = []
    original = PreferenceTrainer.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        trainers.append(self)

    monkeypatch.setattr(PreferenceTrainer, "__init__", keep)
    result = await run_preference(tmp_path / "run", tiny_model, pairs, max_steps=4)
    assert [trainer.ref_model for trainer in trainers] == [None]

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), result["final_model_path"])
    trainer = bare_trainer(tuned, tmp_path)
    rows = PreferenceRows(pairs["train"])
    batch = PreferenceCollator(pad_token_id=0)([rows[i] for i in range(4)])
    with torch.no_grad():
        reference = trainer._reference_logps(tuned, batch, counts=None)
        policy = trainer._sequence_logps(tuned, batch, split=None)
        expected = -row_losses(base(input_ids=batch["input_ids"]).logits, batch["labels"])[0]
    torch.testing.assert_close(reference.sums, expected, rtol=1e-5, atol=1e-4)
    assert (policy.sums - expected).abs().max() > 0.1  # the trained adapter does change the model


async def test_sft_data_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import plugins.training.model_setup as model_setup

    monkeypatch.setattr(model_setup, "load_model_for_training", lambda *a, **k: pytest.fail("the model was loaded"))
    sft = {"train": str(tmp_path / "train"), "validation": None, "max_seq_length": 32, "chat_template": None}
    with pytest.raises(InputError, match="fine_tuning plugin") as caught:
        await run_preference(tmp_path, "tiny", sft)
    assert caught.value.exit_code == 2


async def test_a_loss_that_does_not_fit_the_data_is_refused(tmp_path, pairs):
    with pytest.raises(ConfigError, match="loss kto trains on unpaired") as caught:
        await run_preference(tmp_path, "tiny", pairs, plugin={"loss": "kto"})
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("key", "value", "message"), [("beta", 0, "greater than 0"), ("loss", "dpoo", "dpo")])
def test_bad_settings_are_refused_at_load_with_their_line(key, value, message, tmp_path):
    workflow = write_workflow(
        tmp_path,
        stages={
            "PARSE": [step("training_config", model_name_or_path="tiny")],
            "DO": [step(PLUGIN, **{key: value})],
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_workflow(workflow)
    text = str(caught.value)
    assert caught.value.exit_code == 2 and message in text
    assert f":{line_of(workflow, f'{key}:')}" in text, text


def test_settings_the_loss_ignores_are_announced():
    findings = PreferenceTrainingPlugin({"loss": "orpo", "simpo_gamma": 1.0}).check_workflow([])
    assert [(f.key, f.error) for f in findings] == [("simpo_gamma", False)]


async def test_resumed_run_ends_like_an_uninterrupted_one(tiny_model, pairs, tmp_path):
    settings = {"max_steps": 8, "plugin": {"loss": "dpo"}}
    reference = await run_preference(tmp_path / "straight", tiny_model, pairs, **settings)

    interrupted = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        await run_preference(interrupted, tiny_model, pairs, cancel_at_step=3, **settings)
    resumed = await run_preference(interrupted, tiny_model, pairs, resume=True, **settings)
    assert resumed["resumed_from"] is not None and int(resumed["resumed_from"].rsplit("-", 1)[1]) >= 3
    assert resumed["steps"] == reference["steps"] == 8
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert resumed["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], rel=1e-5)


def test_a_large_vocabulary_scores_only_the_answer_tokens_with_the_same_result(tmp_path, pairs):
    """From 32k tokens the log-probabilities come from the output layer on the answer tokens only
    (chunked_loss.py); they and their gradients equal the full logits' ones."""
    from transformers import AutoModelForCausalLM

    from plugins.training.preference.batches import PreferenceCollator, PreferenceRows

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model_dir(tmp_path / "model", vocab=32_000))
    trainer = bare_trainer(model, tmp_path)
    assert trainer.split_model is not None
    rows = PreferenceRows(pairs["train"])
    batch = PreferenceCollator(pad_token_id=0)([rows[i] for i in range(4)])
    gradients = []
    for split in (trainer.split_model, None):
        model.zero_grad()
        logps = trainer._sequence_logps(model, batch, split)
        logps.sums.sum().backward()
        gradients.append((logps.sums.detach(), model.lm_head.weight.grad.clone()))
    torch.testing.assert_close(gradients[0][0], gradients[1][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gradients[0][1], gradients[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
async def test_dpo_with_an_adapter_ends_at_trls_loss(tmp_path):
    """The same rows, order, LoRA and schedule give the same losses as TRL's DPOTrainer: the
    formulas, the answer masks and the reference (the adapter disabled) agree with TRL's."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model_dir = build_tiny_model_dir(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(0)
    words = "the a cat dog runs jumps quickly slowly over under big small red blue".split()
    texts = [
        {name: " ".join(rng.choice(words) for _ in range(6)) for name in ("prompt", "chosen", "rejected")}
        for _ in range(16)
    ]

    def sequence(prompt: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer + tokenizer.eos_token)["input_ids"]
        return np.asarray(prompt_ids + answer_ids, np.int32), np.asarray(
            [-100] * len(prompt_ids) + answer_ids, np.int32
        )

    examples = [
        EncodedExample(parts={part: sequence(row["prompt"], row[part]) for part in ("chosen", "rejected")})
        for row in texts
    ]
    write_preference_split(tmp_path / "train", examples, "preference")
    tokenized = {"task": "preference", "train": str(tmp_path / "train"), "validation": None, "max_seq_length": 64}
    schedule = {"learning_rate": 1e-3, "max_steps": 6, "logging_steps": 2, "seed": 0}
    ours = await run_preference(
        tmp_path / "ours", str(model_dir), tokenized, batch_size=4, save_steps=None, precision="fp32",
        lora_r=8, lora_alpha=16, lr_scheduler="cosine", **schedule,
    )  # fmt: skip

    torch.manual_seed(0)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=DPOConfig(
            output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, lr_scheduler_type="cosine",
            save_strategy="no", use_cpu=True, report_to=[], beta=0.1, disable_tqdm=True, **schedule,
        ),
        train_dataset=Dataset.from_list(texts),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    trainer.train()
    theirs = [record["loss"] for record in trainer.state.log_history if "loss" in record]
    assert [record["loss"] for record in _train_records(ours)] == pytest.approx(theirs, rel=1e-3)


def test_the_dpo_workflow_trains_the_projects_demo_end_to_end(tmp_path):
    """configs/dpo.yaml on the tiny model: INPUT reads the pairs, THINK tokenizes and plans, DO trains
    with DPO, REVIEW scores the held-out pairs with the tuned model and its start (three steps of a toy
    model do not pass the demo's threshold: it only reports here), OUTPUT exports and reports."""
    import json

    from helpers.cli import run_train

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "dpo"
    done = run_train(
        "--config", "configs/dpo.yaml", "--model", "tiny", "--max-steps", "3", "--output", str(out), "--yes",
        "--set", "evaluation.on_fail=continue", cwd=repo, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "run.json").read_text(encoding="utf-8"))["summary"]
    assert summary["dataset_rows"] == {"train": 48, "validation": 12}
    assert 0.0 <= summary["preference_accuracy"] <= 1.0
    report = json.loads((out / "memory.json").read_text(encoding="utf-8"))["entries"]["evaluation.report"]
    assert report["preference"]["examples"] == 12 and report["preference"]["vs_start"]["beta"] == 0.1
    assert report["thresholds"][0]["name"] == "reward_accuracy_min"
    assert summary["eval_preference_accuracy"] == report["metrics"]["fine_tuned"]["preference_accuracy"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="preference-table"' in html and 'id="rewards"' in html and "chosen answer" in html
    assert (out / "export" / "huggingface").is_dir() or any((out / "export").iterdir())


@pytest.mark.parametrize("method", ["dora", "qlora"])
async def test_dora_and_qlora_learn_a_repeated_batch_against_the_adapter_off_reference(
    method, tiny_model, pairs, tmp_path
):
    result = await run_preference(tmp_path, tiny_model, pairs, plugin={"loss": "dpo"}, training_method=method)
    records = _train_records(result)
    assert records[-1]["loss"] < records[0]["loss"] * 0.9, [r["loss"] for r in records]
    assert result["method"] == method and records[-1]["rewards/margins"] > 0
    assert (Path(result["final_model_path"]) / "adapter_model.safetensors").is_file()
