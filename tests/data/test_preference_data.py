"""Preference data: the formats, their bad rows, answer-only masks for two templates, truncation order,
and the tokenized preference splits written through the cache."""

from __future__ import annotations

import json

import pytest
from helpers.data_tokenizer import build_char_tokenizer, build_tokenizer

from entity_training import InputError
from plugins.data.dataset import check_kto_labels, load_conversations
from plugins.data.encoding import IGNORE_INDEX
from plugins.data.formats import BadRow
from plugins.data.preference_encoding import encode_preferences
from plugins.data.preference_formats import detect_row_format, normalise_any_row
from plugins.data.preference_tokenized import load_preference_split
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data.templates import CHATML, LLAMA3, TemplateRenderer


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


PAIR = {"messages": [user("Q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}


@pytest.mark.parametrize(
    ("row", "fmt", "expected"),
    [
        (
            {
                "system": "S",
                "conversations": [{"from": "human", "value": "Q"}],
                "chosen": {"from": "gpt", "value": "good"},
                "rejected": {"from": "gpt", "value": "bad"},
            },
            "sharegpt_pairs",
            {**PAIR, "messages": [{"role": "system", "content": "S"}, user("Q")]},
        ),
        ({"messages": [user("Q")], "chosen": assistant("good"), "rejected": [assistant("bad")]}, "openai_pairs", PAIR),
        ({"prompt": [user("Q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}, "prompt_pairs", PAIR),
        ({"prompt": "Q", "chosen": "good", "rejected": "bad"}, "prompt_pairs", PAIR),
        (
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Q\n\nAssistant: good",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Q\n\nAssistant: bad",
            },
            "transcript_pairs",
            {**PAIR, "messages": [user("Hi"), assistant("Hello"), user("Q")]},
        ),
        (
            {"messages": [user("Hi"), assistant("Hello"), user("Q"), assistant("good")], "label": True},
            "kto_messages",
            {
                "messages": [user("Hi"), assistant("Hello"), user("Q")],
                "completion": [assistant("good")],
                "desirable": True,
            },
        ),
        (
            {"prompt": "Q", "completion": "bad", "label": False},
            "kto_prompt_completion",
            {"messages": [user("Q")], "completion": [assistant("bad")], "desirable": False},
        ),
    ],
)
def test_each_format_is_detected_and_normalised(row, fmt, expected):
    assert detect_row_format(row)[0] == fmt
    assert normalise_any_row(row, fmt) == expected


def test_sft_rows_are_still_detected_as_before():
    assert detect_row_format({"messages": []})[0] == "openai"
    assert detect_row_format({"prompt": "p", "completion": "c"})[0] == "prompt_completion"
    assert detect_row_format({"conversations": []})[0] == "sharegpt"


@pytest.mark.parametrize(
    ("row", "fmt", "reason"),
    [
        ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "prompt_pairs", "are identical"),
        ({"prompt": " ", "chosen": "good", "rejected": "bad"}, "prompt_pairs", "the prompt is empty"),
        ({"prompt": "Q", "chosen": "", "rejected": "bad"}, "prompt_pairs", "'chosen' is empty"),
        ({"prompt": "Q", "chosen": [user("x")], "rejected": "bad"}, "prompt_pairs", "must hold assistant turns"),
        ({"prompt": "Q", "completion": "c", "label": "yes"}, "kto_prompt_completion", "'label' must be true"),
        ({"messages": [user("Q")], "label": True}, "kto_messages", "does not end with an assistant turn"),
        ({"chosen": "good answer", "rejected": "bad answer"}, "transcript_pairs", "hold no prompt"),
    ],
)
def test_bad_rows_say_why(row, fmt, reason):
    with pytest.raises(BadRow, match=reason):
        normalise_any_row(row, fmt)


def test_a_row_with_half_a_pair_is_bad():
    with pytest.raises(BadRow, match="needs both 'chosen' and 'rejected'"):
        detect_row_format({"prompt": "Q", "chosen": "good"})


def test_bad_rows_are_located_by_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "a"}]
    )
    with pytest.raises(InputError, match="'rejected'") as caught:
        load_conversations([path])
    assert f"{path}:2" in str(caught.value)


def test_field_map_renames_preference_columns(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"question": "Q", "good": "good", "bad": "bad"}])
    dataset = load_conversations([path], field_map={"question": "prompt", "good": "chosen", "bad": "rejected"})
    assert dataset.task == "preference"
    assert {k: v for k, v in dataset.conversations[0].items() if k != "source"} == PAIR


def test_one_task_per_dataset(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "i", "output": "o"}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(InputError, match="mixes tasks") as caught:
        load_conversations([sft, pairs])
    assert str(sft) in str(caught.value) and str(pairs) in str(caught.value)
    assert load_conversations([sft]).statistics()["task"] == "sft"
    assert load_conversations([pairs]).statistics()["task"] == "preference"


def test_kto_needs_both_labels(tmp_path):
    path = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "Q", "completion": "c", "label": False}] * 2)
    dataset = load_conversations([path])
    with pytest.raises(InputError, match="KTO needs both desirable and undesirable") as caught:
        check_kto_labels(dataset)
    assert str(path) in str(caught.value)


def test_shared_dpo_demo(shared_datasets):
    dataset = load_conversations([shared_datasets / "dpo_en_demo.json"])
    stats = dataset.statistics()
    assert (stats["rows"], stats["task"], stats["detected_format"]) == (300, "preference", ["sharegpt_pairs"])
    first = dataset.conversations[0]
    assert first["source"]["line"] == 2 and first["messages"][-1]["role"] == "user"
    assert first["chosen"][0]["role"] == first["rejected"][0]["role"] == "assistant"


def test_shared_kto_demo(shared_datasets):
    dataset = load_conversations([shared_datasets / "kto_en_demo.json"])
    stats = dataset.statistics()
    assert (stats["rows"], stats["task"], stats["detected_format"]) == (300, "unpaired", ["kto_messages"])
    assert 0 < stats["desirable"] < 300
    check_kto_labels(dataset)  # both labels: no error


# -- encoding ---------------------------------------------------------------------------------


def encode(template, rows, task="preference", max_seq_length=4096):
    tokenizer = build_char_tokenizer(template)
    encoded = encode_preferences(
        rows,
        tokenizer,
        TemplateRenderer(template, tokenizer),
        task=task,
        max_seq_length=max_seq_length,
        truncation="right",
    )
    return tokenizer, encoded


def trained_and_whole(tokenizer, ids, labels):
    return tokenizer.decode(labels[labels != IGNORE_INDEX].tolist()), tokenizer.decode(ids.tolist())


MULTI_TURN_PAIR = {
    "messages": [user("Hi"), assistant("Hello"), user("Q")],
    "chosen": [assistant("good")],
    "rejected": [assistant("bad")],
}


@pytest.mark.parametrize(("template", "end"), [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>")])
def test_only_the_answer_and_its_end_of_turn_are_scored(template, end):
    tokenizer, encoded = encode(template, [MULTI_TURN_PAIR])
    (example,) = encoded.examples
    for part, answer in (("chosen", "good"), ("rejected", "bad")):
        ids, labels = example.parts[part]
        trained, whole = trained_and_whole(tokenizer, ids, labels)
        assert trained == answer + end  # not "Hello", the earlier assistant turn of the prompt
        assert whole.endswith(answer + end + ("\n" if template == CHATML else ""))


@pytest.mark.parametrize(("template", "end"), [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>")])
def test_kto_completion_is_scored_and_labelled(template, end):
    row = {
        "messages": [user("Q")],
        "completion": [assistant("ok")],
        "desirable": False,
        "source": {"file": "f", "line": 3},
    }
    tokenizer, encoded = encode(template, [row], task="unpaired")
    (example,) = encoded.examples
    assert trained_and_whole(tokenizer, *example.parts["completion"])[0] == "ok" + end
    assert example.desirable is False and example.source == {"file": "f", "line": 3}


def test_truncation_cuts_the_prompt_start_first_then_the_answers():
    long_prompt = {"messages": [user("p" * 60 + "END")], "chosen": [assistant("good")], "rejected": [assistant("bad!")]}
    tokenizer, encoded = encode(CHATML, [long_prompt], max_seq_length=40)
    assert encoded.truncated == 1
    for part, answer in (("chosen", "good"), ("rejected", "bad!")):
        ids, labels = encoded.examples[0].parts[part]
        trained, whole = trained_and_whole(tokenizer, ids, labels)
        assert len(ids) <= 40 and trained == answer + "<|im_end|>"  # answers intact
        assert "END<|im_end|>" in whole and not whole.startswith("<|im_start|>user")  # the prompt's end is kept
    long_answers = {"messages": [user("Q")], "chosen": [assistant("g" * 80)], "rejected": [assistant("b" * 10)]}
    tokenizer, encoded = encode(CHATML, [long_answers], max_seq_length=40)
    ids, labels = encoded.examples[0].parts["chosen"]
    trained, whole = trained_and_whole(tokenizer, ids, labels)
    assert len(ids) == 40 and whole.startswith("<|im_start|>user\nQ")  # short prompt kept whole
    assert trained == "g" * len(trained) and not trained.endswith("<|im_end|>")  # the long answer is cut at its end
    assert encoded.truncated == 1
    tokenizer = build_char_tokenizer(CHATML)
    dropped = encode_preferences(
        [long_prompt, PAIR],
        tokenizer,
        TemplateRenderer(CHATML, tokenizer),
        task="preference",
        max_seq_length=40,
        truncation="drop",
    )
    assert (dropped.dropped_too_long, dropped.truncated, len(dropped.examples)) == (1, 0, 1)


def test_preference_splits_are_written_cached_and_never_packed(tmp_path):
    rows = [
        {"messages": [user(f"Question {i}")], "chosen": [assistant("Yes.")], "rejected": [assistant("No.")]}
        for i in range(5)
    ]
    tokenizer = build_tokenizer()
    options = PreparationOptions(max_seq_length=64, packing=True)
    prepared = prepare_tokenized(rows[:4], rows[4:], tokenizer, options, cache_dir=tmp_path)
    tokenized, stats = prepared.tokenized, prepared.stats
    assert (tokenized["task"], tokenized["packing"], stats["task"]) == ("preference", False, "preference")
    assert stats["train"]["samples"] == 4 and stats["train"]["sequences"] == 8 and stats["truncated_samples"] == 0
    split = load_preference_split(tokenized["train"])
    assert split.task == "preference" and len(split) == 4
    trained = [
        t for t, label in zip(split[0]["chosen_input_ids"], split[0]["chosen_labels"], strict=True) if label != -100
    ]
    assert tokenizer.decode(trained) == "Yes.<|im_end|>"
    again = prepare_tokenized(rows[:4], rows[4:], tokenizer, options, cache_dir=tmp_path)
    assert again.cache_hit and again.tokenized == tokenized


def test_sft_data_is_tokenized_as_before_with_task_sft(tmp_path):
    rows = [{"messages": [user("Q"), assistant("A")]}]
    prepared = prepare_tokenized(
        rows, None, build_tokenizer(), PreparationOptions(max_seq_length=64), cache_dir=tmp_path
    )
    assert prepared.tokenized["task"] == prepared.stats["task"] == "sft" and prepared.tokenized["packing"] is True


def test_preview_shows_both_answers_of_a_pair(tmp_path):
    from rich.console import Console

    from plugins.data.preview import print_preview

    rows = [
        {"messages": [user("Hi there")], "chosen": [assistant("Hello, friend.")], "rejected": [assistant("Go away.")]}
    ]
    tokenizer = build_tokenizer()
    prepared = prepare_tokenized(rows, None, tokenizer, PreparationOptions(max_seq_length=64), cache_dir=tmp_path)
    console = Console(record=True, width=120)
    print_preview(prepared.tokenized, tokenizer, n=1, console=console)
    output = console.export_text()
    assert "task=preference" in output and "example 1 chosen" in output and "example 1 rejected" in output
    assert "Hello, friend." in output and "Go away." in output


@pytest.mark.parametrize(("demo", "task"), [("dpo_en_demo.json", "preference"), ("kto_en_demo.json", "unpaired")])
async def test_shared_demos_through_input_and_think_with_the_tiny_tokenizer(
    demo, task, shared_datasets, tmp_path, monkeypatch
):
    """The loader and preparation plugins as a workflow runs them (declared memory keys, the tiny model's own
    template): every example keeps its answer tokens, and long ones are counted as truncated."""
    from helpers.workflows import write_workflow

    from entity_training import Stage
    from entity_training.executor import WorkflowExecutor
    from entity_training.workflow import load_workflow
    from plugins import memory_keys

    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))
    path = write_workflow(
        tmp_path,
        dataset={"dataset_path": shared_datasets / demo, "validation_split": 0.1},
        preparation={"max_seq_length": 256},
        stop_after="THINK",
    )
    result = await WorkflowExecutor(load_workflow(path), tmp_path / "run").run(stop_after=Stage.THINK)
    assert result.status == "success", result.error
    assert result.memory.get(memory_keys.DATASET_STATS)["task"] == task
    tokenized = result.memory.get(memory_keys.DATASET_TOKENIZED)
    stats = result.memory.get(memory_keys.DATASET_TOKEN_STATS)
    assert tokenized["task"] == stats["task"] == task and tokenized["packing"] is False
    assert stats["train"]["samples"] == 270 and stats["validation"]["samples"] == 30
    assert 0 < stats["truncated_samples"] <= 270
    split = load_preference_split(tokenized["train"])
    for part in ("chosen", "rejected") if task == "preference" else ("completion",):
        assert (split.lengths(part) <= 256).all()
        assert all(any(label != IGNORE_INDEX for label in split[i][f"{part}_labels"]) for i in range(len(split)))


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (PAIR, "openai"),
        (PAIR, "sharegpt"),
        ({"messages": [user("Q")], "completion": [assistant("A")], "desirable": True}, "openai"),
    ],
)
def test_converted_preference_rows_load_back_the_same(row, fmt):
    from plugins.data.convert import to_format

    converted = to_format(row, fmt)
    assert normalise_any_row(converted, detect_row_format(converted)[0]) == row


def test_alpaca_cannot_hold_pairs():
    from plugins.data.convert import NotConvertible, to_format

    with pytest.raises(NotConvertible, match="cannot hold preference rows"):
        to_format(PAIR, "alpaca")


async def test_the_loader_refuses_a_validation_file_of_another_task(tmp_path, make_context):
    from entity_training import Stage
    from plugins.dataset_loader import DatasetLoaderPlugin

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    sft = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "i", "output": "o"}])
    config = {"dataset_path": str(pairs), "validation_path": str(sft), "reuse_parsed": False}
    with pytest.raises(InputError, match="mixes tasks") as caught:
        await DatasetLoaderPlugin(config).execute(make_context(Stage.INPUT))
    assert str(sft) in str(caught.value)
