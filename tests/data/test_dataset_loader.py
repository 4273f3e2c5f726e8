"""DatasetLoader: every format, detection, validation of bad rows, the split, statistics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.workflows import line_of, write_workflow

from entity_training import ConfigError, InputError, Stage
from entity_training.workflow import load_workflow
from plugins import memory_keys
from plugins.data import dataset as dataset_module
from plugins.data import load_cache
from plugins.data.conversation_files import read_conversations
from plugins.data.dataset import load_conversations, split_conversations
from plugins.data.formats import detect_format
from plugins.dataset_loader import DatasetLoaderPlugin

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (third-party datasets)")

ALPACA_ROWS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour.", "system": "Be brief."},
    {"instruction": "And now?", "input": "", "output": "Yes.", "history": [["Hi", "Hello!"]]},
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def messages_of(path: Path, **kwargs) -> list[list[dict]]:
    return [c["messages"] for c in load_conversations([path], **kwargs).conversations]


# -- formats ----------------------------------------------------------------------------------


def test_alpaca_input_system_and_history(tmp_path):
    conversations = messages_of(write_jsonl(tmp_path / "a.jsonl", ALPACA_ROWS))
    assert conversations[0] == [
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": "Red."},
    ]
    assert conversations[1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour."},
    ]
    assert [m["role"] for m in conversations[2]] == ["user", "assistant", "user", "assistant"]


def test_sharegpt_roles_function_calls_and_tools(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
            {"from": "observation", "value": '{"temp": 3}'},
            {"from": "gpt", "value": "It is 3 degrees."},
        ],
        "tools": '[{"name": "weather", "parameters": {"type": "object"}}]',
    }
    conversation = load_conversations([write_jsonl(tmp_path / "s.jsonl", [row])]).conversations[0]
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert conversation["messages"][1]["tool_calls"] == [
        {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    assert conversation["tools"] == [{"name": "weather", "parameters": {"type": "object"}}]
    assert conversation["source"] == {"file": str(tmp_path / "s.jsonl"), "line": 1}


def test_openai_messages_with_tool_calls_and_content_parts(tmp_path):
    row = {
        "messages": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Sum "}, {"type": "text", "text": "2+2"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "add", "arguments": '{"a": 2}'}}],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "4"},
        ]
    }
    messages = messages_of(write_jsonl(tmp_path / "o.jsonl", [row]))[0]
    assert messages[0] == {"role": "system", "content": "Use tools."}
    assert messages[1]["content"] == "Sum 2+2"
    assert messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2}}}],
    }


def test_prompt_completion_strings_and_lists(tmp_path):
    rows = [
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hey"}]},
    ]
    assert messages_of(write_jsonl(tmp_path / "p.jsonl", rows)) == [
        [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
    ]


def test_text_files_per_file_and_per_paragraph(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph\nstill first.\n\n\nSecond one.\n", encoding="utf-8")
    whole = load_conversations([path]).conversations
    assert len(whole) == 1 and whole[0]["document"] is True
    paragraphs = load_conversations([path], text_unit="paragraph").conversations
    assert [c["messages"][0]["content"] for c in paragraphs] == ["First paragraph\nstill first.", "Second one."]
    assert [c["source"]["line"] for c in paragraphs] == [1, 5]


def test_json_array_data_object_and_field_map(tmp_path):
    array = tmp_path / "rows.json"
    array.write_text(
        '[\n  {"question": "Q1", "answer": "A1"},\n  {"question": "Q2", "answer": "A2"}\n]', encoding="utf-8"
    )
    dataset = load_conversations(
        [array], dataset_format="json", field_map={"question": "instruction", "answer": "output"}
    )
    assert [c["source"]["line"] for c in dataset.conversations] == [2, 3]
    assert dataset.files[0].format == "alpaca"
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"text": "hello"}]}), encoding="utf-8")
    assert load_conversations([wrapped]).conversations[0]["source"] == {"file": str(wrapped), "index": 0}


def test_parquet_csv_and_saved_dataset_folder(tmp_path):
    import datasets

    table = datasets.Dataset.from_list([{"instruction": "Say hi", "input": "", "output": "Hi"}])
    table.to_parquet(str(tmp_path / "d.parquet"))
    table.to_csv(str(tmp_path / "d.csv"), index=False)
    table.save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "d.parquet", tmp_path / "d.csv", tmp_path / "saved"):
        assert messages_of(path)[0][-1] == {"role": "assistant", "content": "Hi"}, path


def test_mixed_formats_in_a_folder_are_normalised(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ALPACA_ROWS[:1])
    write_jsonl(
        tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    )
    dataset = load_conversations([tmp_path])
    assert sorted(f.format for f in dataset.files) == ["alpaca", "openai"]
    assert dataset.statistics()["detected_format"] == ["alpaca", "openai"]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": []}, "openai"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"text": "t"}, "text"),
    ],
)
def test_detection_names_the_keys(row, expected):
    fmt, why = detect_format(row)
    assert fmt == expected and repr(next(iter(row))) in why


@needs_shared
def test_glaive_toolcall_demo():
    dataset = load_conversations([SHARED / "glaive_toolcall_en_demo.json"])
    stats = dataset.statistics()
    assert stats["rows"] == 300 and stats["detected_format"] == ["sharegpt"]
    assert stats["tool_calls"] == 211 and stats["roles"]["tool"] == 211
    assert all(isinstance(c.get("tools", []), list) for c in dataset.conversations)


@needs_shared
def test_alpaca_demo():
    dataset = load_conversations([SHARED / "alpaca_en_demo.json"])
    assert len(dataset) == 999 and dataset.files[0].format == "alpaca"
    assert dataset.conversations[0]["source"]["line"] == 2


# -- reusing parsed files ----------------------------------------------------------------------


def test_unchanged_files_are_not_parsed_again(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", ALPACA_ROWS)
    cache_dir = tmp_path / "loaded"
    first = load_conversations([path], cache_dir=cache_dir)
    monkeypatch.setattr(dataset_module, "_parse", lambda *a: pytest.fail("parsed again"))
    again = load_conversations([path], cache_dir=cache_dir)
    assert again.conversations == first.conversations and again.statistics() == first.statistics()


def test_changed_bytes_settings_or_a_corrupt_entry_parse_again(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ALPACA_ROWS)
    cache_dir = tmp_path / "loaded"
    load_conversations([path], cache_dir=cache_dir)
    write_jsonl(path, ALPACA_ROWS[:2])
    assert len(load_conversations([path], cache_dir=cache_dir)) == 2
    mapped = load_conversations(
        [path], cache_dir=cache_dir, field_map={"output": "completion", "instruction": "prompt"}
    )
    assert mapped.files[0].format == "prompt_completion"
    write_jsonl(path, [dict(ALPACA_ROWS[0], output="Tan."), ALPACA_ROWS[1]])  # same size as "Red.": new bytes
    assert load_conversations([path], cache_dir=cache_dir).conversations[0]["messages"][-1]["content"] == "Tan."
    for entry in cache_dir.iterdir():
        entry.write_bytes(b"garbage")
    assert len(load_conversations([path], cache_dir=cache_dir)) == 2


def test_unchanged_files_are_not_even_rehashed(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", ALPACA_ROWS)
    monkeypatch.setattr(load_cache, "RACY_WINDOW_NS", 0)  # trust a hash taken after the last change at once
    time.sleep(0.01)
    cache_dir = tmp_path / "loaded"
    load_conversations([path], cache_dir=cache_dir)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(load_cache.hashlib, "file_digest", no_hashing)
    assert len(load_conversations([path], cache_dir=cache_dir)) == 3
    write_jsonl(path, ALPACA_ROWS[:1])  # a new modification time: must be hashed again
    with pytest.raises(AssertionError, match="hashed again"):
        load_conversations([path], cache_dir=cache_dir)


def test_a_same_size_rewrite_with_the_old_modification_time_is_hashed_again(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ALPACA_ROWS)
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    cache_dir = tmp_path / "loaded"
    load_conversations([path], cache_dir=cache_dir)
    write_jsonl(path, [dict(ALPACA_ROWS[0], output="Tan."), *ALPACA_ROWS[1:]])  # as `cp -p` would leave it
    os.utime(path, (hour_ago, hour_ago))
    assert load_conversations([path], cache_dir=cache_dir).conversations[0]["messages"][-1]["content"] == "Tan."


def test_the_parse_cache_keeps_the_most_recently_used_entries(tmp_path, monkeypatch):
    cache_dir = tmp_path / "loaded"
    paths = [write_jsonl(tmp_path / f"d{i}.jsonl", ALPACA_ROWS[: i + 1]) for i in range(3)]
    for path in paths[:2]:
        assert load_conversations([path], cache_dir=cache_dir, max_cached=2).pruned == []
        time.sleep(0.01)  # distinct modification times
    load_conversations([paths[0]], cache_dir=cache_dir, max_cached=2)  # a hit: d0 is now the most recent
    time.sleep(0.01)
    assert len(load_conversations([paths[2]], cache_dir=cache_dir, max_cached=2).pruned) == 1
    assert len(list(cache_dir.glob("*.marshal"))) == 2
    monkeypatch.setattr(dataset_module, "_parse", lambda *a: pytest.fail("parsed again"))
    for kept in (paths[0], paths[2]):
        load_conversations([kept], cache_dir=cache_dir, max_cached=2)


async def test_the_plugin_logs_what_the_parse_cache_removed(tmp_path, make_context):
    paths = [write_jsonl(tmp_path / f"d{i}.jsonl", ALPACA_ROWS[: i + 1]) for i in range(2)]
    for path in paths:
        events: list = []
        context = make_context(Stage.INPUT, events=events)
        config = {"dataset_path": str(path), "cache_max_entries": 1, "validation_split": 0}
        await DatasetLoaderPlugin(config).execute(context)
    assert any("parse cache: removed 1 least recently used" in str(event) for event in events)


# -- split and the plugin ---------------------------------------------------------------------


def test_split_is_reproducible_and_disjoint():
    rows = [{"messages": [], "n": i} for i in range(50)]
    train, validation = split_conversations(rows, 0.2, seed=7)
    again = split_conversations(rows, 0.2, seed=7)
    assert (train, validation) == again and len(validation) == 10
    assert sorted(r["n"] for r in train + validation) == list(range(50))
    assert split_conversations(rows, 0.2, seed=8)[1] != validation


async def test_plugin_stores_splits_and_stats(tmp_path, make_context):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(20)])
    context = make_context(Stage.INPUT)
    summary = await DatasetLoaderPlugin({"dataset_path": str(path), "validation_split": 0.25, "seed": 3}).execute(
        context
    )
    train, validation = (
        read_conversations(context.recall(key)) for key in (memory_keys.DATASET_TRAIN, memory_keys.DATASET_VALIDATION)
    )
    assert (len(train), len(validation)) == (15, 5) and "15 train / 5 validation" in summary
    assert context.recall(memory_keys.DATASET_TRAIN).path == str(tmp_path / "data" / "train.jsonl")
    stats = context.recall(memory_keys.DATASET_STATS)
    assert stats["rows"] == 20 and stats["turns"] == 40 and stats["files"][str(path)]["rows"] == 20
    context2 = make_context(Stage.INPUT)
    await DatasetLoaderPlugin({"dataset_path": str(path), "validation_split": 0.25, "seed": 3}).execute(context2)
    assert read_conversations(context2.recall(memory_keys.DATASET_VALIDATION)) == validation


async def test_plugin_max_samples_and_validation_path(tmp_path, make_context):
    train_file = write_jsonl(tmp_path / "t.jsonl", [{"instruction": f"Q{i}", "output": "A"} for i in range(10)])
    eval_file = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "completion": "c"}])
    context = make_context(Stage.INPUT)
    config = {"dataset_path": str(train_file), "validation_path": str(eval_file), "max_samples": 4}
    await DatasetLoaderPlugin(config).execute(context)
    assert context.recall(memory_keys.DATASET_TRAIN).rows == 4
    assert read_conversations(context.recall(memory_keys.DATASET_VALIDATION))[0]["messages"][-1]["content"] == "c"


async def test_skip_policy_reports_counts(tmp_path, make_context):
    rows = [{"instruction": "ok", "output": "fine"}, {"instruction": "bad", "output": ""}, "not an object"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    events: list = []
    context = make_context(Stage.INPUT, events=events)
    await DatasetLoaderPlugin({"dataset_path": str(path), "on_bad_rows": "skip", "validation_split": 0}).execute(
        context
    )
    assert len(read_conversations(context.recall(memory_keys.DATASET_TRAIN))) == 1
    assert context.recall(memory_keys.DATASET_STATS)["bad_rows"] == 2
    warning = next(e for e in events if "skipped" in str(getattr(e, "data", e)))
    assert "d.jsonl:2" in str(getattr(warning, "data", warning))


# -- bad input: one clear message, exit code 2 ------------------------------------------------


def load_error(path, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        load_conversations([path], **kwargs)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_missing_file_suggests_close_names(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}", encoding="utf-8")
    message = load_error(tmp_path / "trian.jsonl")
    assert "does not exist" in message and "train.jsonl" in message


def test_folder_without_data_files(tmp_path):
    (tmp_path / "readme.md").write_text("x", encoding="utf-8")
    assert "holds no data files" in load_error(tmp_path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": oops}\n', encoding="utf-8")
    assert f"{path}:2" in load_error(path)
    array = tmp_path / "d.json"
    array.write_text('[\n {"text": "a"},\n {"text": }\n]', encoding="utf-8")
    assert f"{array}:3" in load_error(array)
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    message = load_error(lines)
    assert f"{lines}:2" in message and "name the file .jsonl" in message


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('["a list"]', "expected a JSON object"),
        ('{"instruction": "x"}', "cannot tell the format"),
        ('{"instruction": "x", "output": ""}', "'output' is empty"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
        ('{"messages": [{"role": "wizard", "content": "hi"}]}', "unknown role 'wizard'"),
        ('{"conversations": [{"from": "alien", "value": "hi"}]}', "unknown role 'alien'"),
        ('{"prompt": "p"}', "cannot tell the format"),
    ],
)
def test_bad_rows_name_file_line_and_reason(tmp_path, row, reason):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "fine"}\n' + row + "\n" if reason == "expected a JSON object" else row + "\n", encoding="utf-8"
    )
    message = load_error(path)
    assert reason in message and str(path) in message


def test_rows_missing_required_keys_of_the_detected_format(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    message = load_error(path)
    assert f"{path}:2" in message and "'output'" in message and "alpaca" in message


def test_non_utf8_and_empty_files(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    message = load_error(latin)
    assert "not valid UTF-8" in message and f"{latin}:2" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    assert "empty" in load_error(empty)


def test_empty_after_filtering_says_why(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": " "}])
    message = load_error(path, on_bad_rows="skip")
    assert "empty after filtering" in message and "'output' is empty" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"dataset_format": "xml"}, "dataset_format"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"max_samples": 0}, "max_samples"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, setting, expected):
    workflow = write_workflow(tmp_path, dataset={"dataset_path": "d.jsonl", **setting}, stop_after="INPUT")
    with pytest.raises(ConfigError) as caught:
        load_workflow(workflow)
    line = line_of(workflow, f"{expected}:")
    assert caught.value.exit_code == 2 and expected in str(caught.value) and f"{workflow}:{line}" in str(caught.value)


def test_every_config_field_is_described():
    for name, field in DatasetLoaderPlugin.ConfigModel.model_fields.items():
        assert field.description, name


def test_unreadable_binary_files_and_saved_folders(tmp_path):
    import datasets

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    assert "cannot read the parquet file" in load_error(broken)
    splits = datasets.DatasetDict({"test": datasets.Dataset.from_list([{"text": "x"}])})
    splits.save_to_disk(str(tmp_path / "saved"))
    assert "has no 'train' split (it has test)" in load_error(tmp_path / "saved")


def test_two_loaders_in_one_workflow_keep_their_splits_in_their_own_files(tmp_path):
    from helpers.engine import load, run

    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(6)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"}) + "\n" for i in range(4))
    )
    workflow = load(
        tmp_path,
        f"""
workflow:
  INPUT:
    - plugin: dataset_loader
      config: {{dataset_path: {sft}, validation_split: 0}}
    - plugin: dataset_loader
      name: preference_data
      memory: {{dataset: preference}}
      config: {{dataset_path: {pairs}, validation_split: 0}}
""",
    )
    result = run(workflow, tmp_path / "run")
    assert result.status == "success", result.error
    sft_file, pair_file = result.memory.get("dataset.train"), result.memory.get("preference.train")
    assert sft_file.path != pair_file.path
    assert len(read_conversations(sft_file)) == 6 and len(read_conversations(pair_file)) == 4
    assert result.memory.get("dataset.stats")["task"] == "sft"
    assert result.memory.get("preference.stats")["task"] == "preference"
