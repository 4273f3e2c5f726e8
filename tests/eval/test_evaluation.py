"""EvaluationPlugin: masked loss as in training, generation metrics, base comparison, PASS/FAIL."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.dataset_splits import store_splits
from helpers.export_fixtures import (  # noqa: F401
    CHATML_TEMPLATE,
    CONVERSATIONS,
    fill_memory_for_export,
    make_lora_adapter,
    trained_model_dir,
)
from helpers.workflows import step, write_workflow
from pydantic import ValidationError

from entity_training import InputError, PluginConfig, ReviewFailed, Stage
from entity_training.memory import Memory
from entity_training.plugin import Plugin
from plugins import memory_keys as keys
from plugins.data.conversation_files import read_conversations
from plugins.eval import metrics
from plugins.evaluation import EvaluationPlugin


@pytest.fixture
def eval_run(tmp_path, trained_model_dir):  # noqa: F811
    from transformers import AutoTokenizer

    from plugins.data.preparation import PreparationOptions, prepare_tokenized

    make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    memory = Memory()
    fill_memory_for_export(memory, tmp_path / "final-model", str(trained_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(trained_model_dir)
    prepared = prepare_tokenized(
        read_conversations(memory.get(keys.DATASET_TRAIN)),
        read_conversations(memory.get(keys.DATASET_VALIDATION)),
        tokenizer,
        PreparationOptions(max_seq_length=128, chat_template=CHATML_TEMPLATE),
        cache_dir=tmp_path / "cache",
    )
    memory.set(keys.DATASET_TOKENIZED, prepared.tokenized)
    return tmp_path, memory


async def _evaluate(make_context, run_dir, memory, **config):
    context = make_context(Stage.REVIEW, memory=memory, run_dir=run_dir)
    await EvaluationPlugin(config).execute(context)
    return memory.get(keys.EVALUATION_REPORT)


async def test_pass_with_base_comparison_and_samples(make_context, eval_run):
    run_dir, memory = eval_run
    report = await _evaluate(
        make_context,
        run_dir,
        memory,
        metrics=["loss", "perplexity", "bleu", "rouge", "exact_match"],
        num_samples=3,
        generation={"max_new_tokens": 12},
        thresholds={"perplexity_max": 1e6},
    )
    assert report["status"] == "PASS" and report["failures"] == []
    tuned, base = report["metrics"]["fine_tuned"], report["metrics"]["base"]
    assert set(tuned) >= {"loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "eval_tokens"}
    assert tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    assert base["loss"] != tuned["loss"]  # the adapter changes the model
    assert report["improvement"]["loss_reduction"] == pytest.approx((base["loss"] - tuned["loss"]) / base["loss"])
    assert len(report["samples"]) == 3
    sample = report["samples"][0]
    assert sample["reference"] and sample["fine_tuned"] is not None and sample["base"] is not None
    assert "<|im_end|>" not in sample["fine_tuned"]  # generation stops at the end of the turn


async def test_loss_uses_the_training_masking(make_context, eval_run, trained_model_dir):  # noqa: F811
    """The mean over trained tokens equals transformers' own loss on the same labels."""
    from transformers import AutoModelForCausalLM

    from plugins.data.collator import PackedCollator
    from plugins.data.tokenized import load_tokenized

    _, memory = eval_run
    rows = load_tokenized(memory.get(keys.DATASET_TOKENIZED)["validation"])
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    loss, tokens = metrics.token_loss(model, rows, PackedCollator(pad_token_id=0), batch_size=2)

    expected_sum, expected_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(len(rows)):
            row = rows[i]
            start = 0
            for length in row["seq_lengths"]:  # each packed sample on its own
                ids = torch.tensor([row["input_ids"][start : start + length]])
                labels = torch.tensor([row["labels"][start : start + length]])
                count = int((labels[:, 1:] != -100).sum())
                if count:
                    expected_sum += model(input_ids=ids, labels=labels).loss.item() * count
                    expected_tokens += count
                start += length
    assert tokens == expected_tokens
    assert loss == pytest.approx(expected_sum / expected_tokens, rel=1e-4)


async def test_failing_threshold_stops_with_exit_code_3(make_context, eval_run):
    run_dir, memory = eval_run
    with pytest.raises(ReviewFailed) as caught:
        await _evaluate(make_context, run_dir, memory, num_samples=0, thresholds={"perplexity_max": 1.0})
    assert caught.value.exit_code == 3
    assert "perplexity" in str(caught.value) and "perplexity_max=1 by" in str(caught.value)
    report = memory.get(keys.EVALUATION_REPORT)
    assert report["status"] == "FAIL"
    failed = [c for c in report["thresholds"] if not c["passed"]]
    assert failed[0]["name"] == "perplexity_max" and failed[0]["value"] > 1.0


async def test_improvement_threshold_and_continue(make_context, eval_run):
    run_dir, memory = eval_run
    report = await _evaluate(
        make_context,
        run_dir,
        memory,
        num_samples=0,
        metrics=["loss"],
        thresholds={"improvement_min": 0.99},
        on_fail="continue",
    )
    assert report["status"] == "FAIL"
    assert "loss reduction over the base model" in report["failures"][0]


async def test_no_evaluation_data_is_an_input_error(make_context, eval_run):
    run_dir, memory = eval_run
    store_splits(memory, run_dir, validation=[])
    memory.set(keys.DATASET_TOKENIZED, {**memory.get(keys.DATASET_TOKENIZED), "validation": None})
    with pytest.raises(InputError, match="validation_split") as caught:
        await _evaluate(make_context, run_dir, memory)
    assert caught.value.exit_code == 2


async def test_eval_dataset_path_is_tokenized_like_training(make_context, eval_run, monkeypatch):
    import json

    run_dir, memory = eval_run
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(run_dir / "cache-root"))
    path = run_dir / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"messages": c}) for c in CONVERSATIONS[:5]), encoding="utf-8")
    report = await _evaluate(
        make_context,
        run_dir,
        memory,
        eval_dataset_path=str(path),
        num_samples=2,
        metrics=["loss", "rouge"],
        compare_with_base=False,
    )
    assert report["eval_source"] == str(path) and report["metrics"]["base"] is None
    assert report["metrics"]["fine_tuned"]["eval_tokens"] > 0 and len(report["samples"]) == 2


def test_thresholds_must_be_measurable():
    with pytest.raises(ValidationError, match="compare_with_base"):
        EvaluationPlugin({"compare_with_base": False, "thresholds": {"improvement_min": 0.1}})
    with pytest.raises(ValidationError, match="needs 'bleu' in metrics"):
        EvaluationPlugin({"metrics": ["loss"], "thresholds": {"bleu_min": 10}})
    with pytest.raises(ValidationError):
        EvaluationPlugin({"metrics": ["accuracy"]})


def test_text_metrics():
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert metrics.bleu(["completely different words here"], ["the cat sat on the mat"]) < 10
    assert metrics.rouge(["the cat sat"], ["the cat sat"])["rougeL"] == pytest.approx(1.0)
    assert metrics.exact_match(["  Paris ", "london"], ["paris", "Rome"]) == 0.5
    assert metrics.perplexity(0.0) == 1.0


async def test_full_fine_tune_compares_with_a_separately_loaded_base(make_context, eval_run, trained_model_dir):  # noqa: F811
    import shutil

    run_dir, memory = eval_run
    shutil.copytree(trained_model_dir, run_dir / "full-model")
    result = memory.get(keys.TRAINING_RESULT)
    memory.set(keys.TRAINING_RESULT, {**result, "final_model_path": str(run_dir / "full-model"), "method": "full"})
    report = await _evaluate(
        make_context, run_dir, memory, metrics=["loss"], num_samples=1, generation={"max_new_tokens": 4}
    )
    tuned, base = report["metrics"]["fine_tuned"], report["metrics"]["base"]
    assert tuned["loss"] == pytest.approx(base["loss"])  # the same weights: no improvement
    assert report["samples"][0]["fine_tuned"] == report["samples"][0]["base"]


# -- behavioural checks ------------------------------------------------------------------------
# The tiny model answers sums and colours: it never says "zebra", so a check that asks for it
# fails and one that forbids it passes, whatever the adapter does.


def _checks_file(run_dir, *rows: dict):
    import json

    path = run_dir / "checks.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def test_behaviour_checks_report_answers_verdicts_and_rates(make_context, eval_run):
    run_dir, memory = eval_run
    checks = _checks_file(
        run_dir,
        {"prompt": "What is 2 plus 3?", "none_of": ["zebra"]},
        {"prompt": "Name the colour of item 1.", "system": "Answer briefly.", "any_of": ["zebra"]},
    )
    report = await _evaluate(
        make_context,
        run_dir,
        memory,
        metrics=["loss"],
        num_samples=0,
        generation={"max_new_tokens": 6, "do_sample": True},  # behaviour answers are greedy regardless
        behaviour_checks=str(checks),
    )
    behaviour = report["behaviour"]
    assert behaviour["pass_rate"] == 0.5 and behaviour["base_pass_rate"] == 0.5
    assert report["metrics"]["fine_tuned"]["behaviour_pass_rate"] == 0.5
    forbid, ask = behaviour["prompts"]
    assert forbid["check"] == {"prompt": "What is 2 plus 3?", "none_of": ["zebra"]}
    assert forbid["fine_tuned"]["passed"] and forbid["fine_tuned"]["failed"] == []
    assert ask["check"]["system"] == "Answer briefly."
    assert not ask["base"]["passed"] and ask["base"]["failed"] == ["any_of: none of ['zebra'] appears"]
    assert isinstance(ask["fine_tuned"]["answer"], str) and behaviour["max_new_tokens"] == 6


async def test_behaviour_threshold_stops_with_exit_code_3(make_context, eval_run):
    run_dir, memory = eval_run
    checks = _checks_file(run_dir, {"prompt": "What is 2 plus 3?", "any_of": ["zebra"]})
    with pytest.raises(ReviewFailed) as caught:
        await _evaluate(
            make_context,
            run_dir,
            memory,
            metrics=["loss"],
            num_samples=0,
            generation={"max_new_tokens": 4},
            behaviour_checks=str(checks),
            thresholds={"behaviour_min": 0.5},
        )
    assert caught.value.exit_code == 3
    assert "behavioural pass rate 0 is below the minimum behaviour_min=0.5" in str(caught.value)


def test_behaviour_threshold_needs_a_checks_file():
    with pytest.raises(ValidationError, match="behaviour_min needs behaviour_checks"):
        EvaluationPlugin({"thresholds": {"behaviour_min": 0.5}})


async def test_a_bad_checks_file_fails_before_the_run(make_context, tmp_path):
    path = tmp_path / "checks.jsonl"
    path.write_text('{"prompt": "Hi"}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        await EvaluationPlugin({"behaviour_checks": str(path)}).initialize(make_context(Stage.REVIEW))
    assert caught.value.problems[0].line == 1 and "no criterion" in caught.value.problems[0].message


class SeedMemory(Plugin):
    """An INPUT plugin standing in for INPUT..DO: it remembers what a finished training left."""

    supported_stages = (Stage.INPUT,)
    provides = (keys.DATASET_TRAIN, keys.DATASET_VALIDATION, keys.DATASET_TOKENIZED, keys.TRAINING_RESULT)

    class ConfigModel(PluginConfig):
        memory_file: str

    async def _execute_impl(self, context):
        import json
        from pathlib import Path

        for key, value in json.loads(Path(self.config.memory_file).read_text()).items():
            context.remember(key, value)


@pytest.mark.parametrize(
    "check, code",
    [
        ({"prompt": "What is 2 plus 3?", "any_of": ["zebra"]}, 3),
        ({"prompt": "What is 2 plus 3?", "none_of": ["zebra"]}, 0),
    ],
    ids=["fails-and-stops-the-export", "passes-and-exports"],
)
def test_behaviour_threshold_in_a_workflow(eval_run, check, code, capsys):
    import json

    from entity_training.cli import main

    run_dir, memory = eval_run
    seeded = run_dir / "seed.json"
    values = {k: memory.get(k) for k in SeedMemory.provides}
    values = {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in values.items()}
    seeded.write_text(json.dumps(values), encoding="utf-8")
    out = run_dir / "run"
    evaluation = step(
        "evaluation",
        metrics=["loss"],
        num_samples=0,
        generation={"max_new_tokens": 4},
        behaviour_checks=_checks_file(run_dir, check),
        thresholds={"behaviour_min": 1.0},
    )
    workflow = write_workflow(
        run_dir,
        name="workflow.yaml",
        run={"name": "behaviour", "output_dir": out},
        stages={
            "INPUT": [step("test_evaluation.SeedMemory", memory_file=seeded)],
            "REVIEW": [evaluation],
            "OUTPUT": [step("model_export", export_formats=["huggingface"], verify=False), step("run_report")],
        },
    )

    assert main(["--config", str(workflow), "--yes"]) == code
    printed = capsys.readouterr()
    saved = json.loads((out / "memory.json").read_text())["entries"]
    assert saved["evaluation.report"]["behaviour"]["pass_rate"] == (1.0 if code == 0 else 0.0)
    html = (out / "report.html").read_text()
    assert 'id="behaviour-table"' in html
    if code == 3:
        assert "behaviour_min=1" in printed.out + printed.err
        assert not (out / "export").exists() and "export.paths" not in saved
    else:
        assert "behaviour checks passed: 100%" in printed.out
        assert (out / "export").is_dir()
