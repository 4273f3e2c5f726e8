"""EvaluationPlugin on preference data: answer log-probabilities of the tuned model and its start,
accuracy and margins, the implicit reward, KTO completions, thresholds, samples and the report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.dataset_splits import store_splits
from helpers.training import build_tiny_model_dir, run_do_plugin
from helpers.workflows import step, write_workflow

from entity_training import ConfigError, ReviewFailed, Stage
from entity_training.memory import Memory
from entity_training.testing import make_context
from plugins import memory_keys as keys
from plugins.eval.preference import SequenceScores, model_figures, reward_figures, score_sequences
from plugins.evaluation import EvaluationPlugin
from plugins.models.chat_template import CHATML_TEMPLATE
from plugins.preference_training import PreferenceTrainingPlugin

FACTS = [
    ("What colour is the sky?", "Blue."),
    ("How many legs has a cat?", "Four."),
    ("What is 2 + 2?", "Four."),
    ("Which star warms the Earth?", "The Sun."),
]
RAMBLE = "Well, let me think about that for a long while before I answer, because it matters: "


def _pair(question: str, answer: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": RAMBLE + answer}],
    }


def _completion(question: str, answer: str, desirable: bool) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer if desirable else RAMBLE + answer}],
        "label": desirable,
    }


async def _trained(folder: Path, rows: list[dict], loss: str) -> Memory:
    """The rows written, loaded and tokenized as a workflow does, then a few preference-training
    steps on them (the held-out split is the training data: what was learned shows there)."""
    from transformers import AutoTokenizer

    from plugins.data.dataset import load_conversations
    from plugins.data.preparation import PreparationOptions, prepare_tokenized

    model = build_tiny_model_dir(folder / "model")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    conversations = load_conversations([data]).conversations
    prepared = prepare_tokenized(
        conversations,
        conversations,
        AutoTokenizer.from_pretrained(model),
        PreparationOptions(max_seq_length=128, chat_template=CHATML_TEMPLATE),
        cache_dir=folder / "cache",
    )
    training = {"batch_size": 4, "logging_steps": 2, "save_steps": 100, "seed": 0, "lora_dropout": 0.0,
                "lr_scheduler": "constant", "learning_rate": 1e-2, "max_steps": 8}  # fmt: skip
    memory = await run_do_plugin(
        PreferenceTrainingPlugin({"loss": loss}), folder, str(model), prepared.tokenized, training=training
    )
    store_splits(memory, folder, validation=conversations)
    return memory


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    return folder, asyncio.run(_trained(folder, [_pair(q, a) for q, a in FACTS], "dpo"))


@pytest.fixture(scope="module")
def kto_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kto")
    rows = [_completion(q, a, desirable) for q, a in FACTS for desirable in (True, False)]
    return folder, asyncio.run(_trained(folder, rows, "kto"))


async def _evaluate(run, **config) -> dict:
    folder, memory = run
    await EvaluationPlugin(config).execute(make_context(Stage.REVIEW, folder, memory))
    return memory.get(keys.EVALUATION_REPORT)


def test_figures_of_hand_made_log_probabilities():
    """Accuracy and margin per answer token and summed, and the implicit reward against the start."""
    # Two pairs: [chosen, rejected] summed log-probabilities over 2 and 4 answer tokens.
    tuned = SequenceScores(np.array([[-2.0, -6.0], [-4.0, -6.0]]), np.array([[2, 4], [2, 4]]))
    start = SequenceScores(np.array([[-3.0, -5.0], [-4.0, -4.0]]), np.array([[2, 4], [2, 4]]))
    figures = model_figures(tuned)
    # Per token: pair 1 chosen -1 vs rejected -1.5 (preferred); pair 2 chosen -2 vs -1.5 (not).
    assert figures["preference_accuracy"] == 0.5
    assert figures["preference_margin"] == pytest.approx((0.5 - 0.5) / 2)
    # Summed: pair 1 -2 vs -6 and pair 2 -4 vs -6: both preferred.
    assert figures["preference_accuracy_summed"] == 1.0
    assert figures["preference_margin_summed"] == pytest.approx((4 + 2) / 2)
    rewards = reward_figures(tuned, start, beta=0.5)
    # Log-ratios: pair 1 chosen +1, rejected -1 -> reward margin 0.5 * 2; pair 2 chosen 0, rejected -2 -> 1.
    assert rewards["reward_accuracy"] == 1.0
    assert rewards["reward_margin"] == pytest.approx(1.0)
    assert rewards["beta"] == 0.5


def test_figures_of_hand_made_completions():
    desirable = np.array([True, True, False, False])
    tuned = SequenceScores(np.array([[-1.0], [-3.0], [-4.0], [-2.0]]), np.ones((4, 1), int), desirable)
    start = SequenceScores(np.array([[-2.0], [-2.0], [-3.0], [-3.0]]), np.ones((4, 1), int), desirable)
    assert model_figures(tuned) == {"desirable_logp": -2.0, "undesirable_logp": -3.0, "preference_margin": 1.0}
    rewards = reward_figures(tuned, start, beta=0.1)
    assert rewards["desirable_rose"] == 0.5 and rewards["undesirable_fell"] == 0.5 and rewards["moved_right"] == 0.5


def test_scores_are_the_answer_tokens_log_probabilities(dpo_run):
    """score_sequences equals log-softmax of the model's logits, gathered on the labelled tokens."""
    from transformers import AutoModelForCausalLM

    from plugins.data.preference_tokenized import load_preference_split

    folder, memory = dpo_run
    split = load_preference_split(memory.get(keys.DATASET_TOKENIZED)["validation"])
    model = AutoModelForCausalLM.from_pretrained(folder / "model").eval()
    scores = score_sequences(model, split, pad_token_id=0, batch_size=3)
    for index in range(len(split)):
        for part, name in enumerate(("chosen", "rejected")):
            ids = torch.tensor([split[index][f"{name}_input_ids"]])
            labels = torch.tensor(split[index][f"{name}_labels"])
            with torch.no_grad():
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            trained = (labels[1:] != -100).nonzero().squeeze(-1)
            expected = logps[trained, labels[1:][trained]].sum().item()
            assert scores.sums[index, part] == pytest.approx(expected, abs=1e-4)
            assert scores.counts[index, part] == len(trained)


async def test_dpo_moves_the_tuned_model_away_from_its_start(dpo_run):
    report = await _evaluate(dpo_run, num_samples=2, generation={"max_new_tokens": 6})
    assert report["status"] == "PASS" and report["task"] == "preference"
    tuned, start = report["metrics"]["fine_tuned"], report["metrics"]["base"]
    assert "loss" not in tuned and "bleu" not in tuned  # the SFT metrics do not apply
    assert tuned["preference_margin_summed"] > start["preference_margin_summed"]
    assert tuned["chosen_logp"] != start["chosen_logp"]
    preference = report["preference"]
    assert preference["examples"] == len(FACTS) and preference["loss"] == "dpo"
    assert preference["vs_start"]["beta"] == 0.1 and preference["vs_start"]["reward_accuracy"] == 1.0
    assert preference["vs_start"]["reward_margin"] > 0
    # The same implicit reward as training's last evaluation on the same pairs (rows of equal batches).
    logged = [r for r in dpo_run[1].get(keys.TRAINING_RESULT)["log_history"] if "eval_rewards/margins" in r][-1]
    assert preference["vs_start"]["reward_margin"] == pytest.approx(logged["eval_rewards/margins"], rel=1e-3)
    assert preference["vs_start"]["chosen_reward"] == pytest.approx(logged["eval_rewards/chosen"], abs=1e-4)
    sample = report["samples"][0]
    assert sample["prompt"] == FACTS[0][0] and sample["reference"] == FACTS[0][1]
    assert sample["fine_tuned"] is not None and sample["base"] is not None


async def test_a_preference_threshold_stops_the_export(dpo_run):
    with pytest.raises(ReviewFailed, match="preference_margin_min=100") as failed:
        await _evaluate(dpo_run, num_samples=0, thresholds={"preference_margin_min": 100.0})
    assert failed.value.exit_code == 3


async def test_sft_settings_on_preference_data(dpo_run):
    """An SFT threshold is refused before any model loads; the SFT metrics are ignored, with a notice."""
    with pytest.raises(ConfigError, match="thresholds.loss_max applies to supervised data"):
        await _evaluate(dpo_run, metrics=["loss"], thresholds={"loss_max": 3.0})
    report = await _evaluate(dpo_run, metrics=["bleu"], num_samples=0, compare_with_base=False)
    assert report["preference"]["vs_start"] is None and "bleu" not in report["metrics"]["fine_tuned"]


async def test_kto_completions_are_evaluated(kto_run):
    report = await _evaluate(kto_run, num_samples=1, generation={"max_new_tokens": 4},
                             thresholds={"reward_accuracy_min": 0.5})  # fmt: skip
    tuned, start = report["metrics"]["fine_tuned"], report["metrics"]["base"]
    assert set(tuned) >= {"desirable_logp", "undesirable_logp", "preference_margin"}
    assert tuned["preference_margin"] > start["preference_margin"]
    moved = report["preference"]["vs_start"]
    # As many desirable completions as undesirable ones: the share moved right is the mean of both shares.
    assert moved["moved_right"] == pytest.approx((moved["desirable_rose"] + moved["undesirable_fell"]) / 2)
    assert moved["undesirable_fell"] == 1.0 and moved["undesirable_reward"] < 0 < moved["beta"]
    assert report["thresholds"][0]["value"] == moved["moved_right"]
    assert report["samples"][0]["reference"] == FACTS[0][1]  # a desirable completion


async def test_the_report_shows_the_preference_sections(dpo_run):
    from plugins.report.collect import ReportInputs, collect_report_data
    from plugins.report.render import render_report

    folder, memory = dpo_run
    report = await _evaluate(dpo_run, num_samples=1, generation={"max_new_tokens": 4})
    inputs = ReportInputs(training_result=memory.get(keys.TRAINING_RESULT), evaluation=report)
    html = render_report(collect_report_data(inputs, folder))
    assert 'id="preference-table"' in html and "reward accuracy" in html
    assert "chosen answer" in html and FACTS[0][0] in html
    assert 'id="rewards"' in html and "margin (training)" in html  # the reward curves


@pytest.mark.parametrize(
    ("training", "threshold", "message"),
    [
        (step("preference_training"), {"loss_max": 2.0}, "thresholds.loss_max applies to supervised data"),
        (step("preference_training", loss="kto"), {"bleu_min": 1.0}, "KTO completions"),
        (step("preference_training", loss="kto"), {"preference_accuracy_min": 0.5}, "use reward_accuracy_min"),
        (step("fine_tuning"), {"preference_accuracy_min": 0.9}, "applies to preference data"),
    ],
)
def test_a_threshold_for_the_other_kind_of_data_is_refused_at_load(training, threshold, message, tmp_path):
    from entity_training.workflow import load_workflow

    metrics = ["loss", "bleu"]
    workflow = write_workflow(
        tmp_path,
        stages={
            "INPUT": [step("dataset_loader", dataset_path="data.jsonl")],
            "PARSE": [step("training_config", model_name_or_path="tiny")],
            "THINK": [step("data_preparation"), step("memory_plan")],
            "DO": [training],
            "REVIEW": [step("evaluation", metrics=metrics, thresholds=threshold)],
        },
    )
    with pytest.raises(ConfigError, match=message):
        load_workflow(workflow)
