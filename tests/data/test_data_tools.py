"""The preview, data/prepare_dataset.py (convert, split, statistics) and the sample data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data_tokenizer import build_tokenizer
from helpers.workflows import write_workflow
from rich.console import Console

from plugins.data.convert import NotConvertible, to_format
from plugins.data.dataset import load_conversations
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data.preview import TRAINED_STYLE, _token_texts, print_preview, render_sample

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data" / "prepare_dataset.py"
TOOL_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"c": "Oslo"}}}],
        },
        {"role": "tool", "content": "3C"},
        {"role": "assistant", "content": "3 degrees."},
    ],
    "tools": [{"name": "w"}],
}


def test_preview_highlights_exactly_the_trained_tokens(tmp_path):
    tokenizer = build_tokenizer()
    conversations = [
        {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, friend."}]}
    ] * 2
    prepared = prepare_tokenized(
        conversations, [], tokenizer, PreparationOptions(max_seq_length=64), cache_dir=tmp_path
    )
    console = Console(record=True, width=120, color_system="truecolor")
    print_preview(prepared.tokenized, tokenizer, n=1, console=console)
    output = console.export_text()
    assert prepared.tokenized["cache_key"] in output and "sample 1" in output and "sample 2" not in output
    assert "Hello, friend." in output and "trained" in output

    from plugins.data.tokenized import load_tokenized

    row = load_tokenized(prepared.tokenized["train"])[0]
    first = row["seq_lengths"][0]
    text = render_sample(row["input_ids"][:first], row["labels"][:first], tokenizer)
    highlighted = "".join(text.plain[s.start : s.end] for s in text.spans if s.style == TRAINED_STYLE)
    assert highlighted == "Hello, friend.<|im_end|>"


def test_token_texts_keep_multibyte_characters_whole():
    tokenizer = build_tokenizer()
    ids = tokenizer("Café 😀 ok", add_special_tokens=False)["input_ids"]
    pieces = _token_texts(ids, tokenizer)
    assert len(pieces) == len(ids) and "".join(pieces) == "Café 😀 ok"
    assert "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize("fmt", ["openai", "sharegpt"])
def test_conversion_round_trips(tmp_path, fmt):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(to_format(TOOL_CONVERSATION, fmt)) + "\n", encoding="utf-8")
    loaded = load_conversations([path]).conversations[0]
    assert loaded["messages"] == TOOL_CONVERSATION["messages"] and loaded["tools"] == TOOL_CONVERSATION["tools"]


def test_alpaca_conversion_keeps_history_and_refuses_tools(tmp_path):
    conversation = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2}
    row = to_format(conversation, "alpaca")
    assert row == {"instruction": "a", "input": "", "output": "b", "history": [["a", "b"]]}
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert load_conversations([path]).conversations[0]["messages"] == conversation["messages"]
    with pytest.raises(NotConvertible, match="tool"):
        to_format(TOOL_CONVERSATION, "alpaca")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_script_converts_splits_and_reports(tmp_path):
    result = run_script(
        "data/sample.jsonl", "--to", "sharegpt", "--output-dir", str(tmp_path), "--validation-split", "0.2"
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["train_rows"], stats["validation_rows"]) == (80, 20)
    converted = load_conversations([tmp_path / "train.jsonl", tmp_path / "validation.jsonl"])
    assert len(converted) == 100 and {f.format for f in converted.files} == {"sharegpt"}
    assert json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))["rows"] == 100


def test_script_reports_bad_input_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n{"instruction": "x"}\n', encoding="utf-8")
    result = run_script(str(bad))
    assert result.returncode == 2 and f"{bad}:2" in result.stderr and "Traceback" not in result.stderr


def test_sample_data_is_varied_valid_alpaca():
    dataset = load_conversations([REPO / "data" / "sample.jsonl"])
    assert len(dataset) == 100 and dataset.files[0].format == "alpaca"
    prompts = [c["messages"][0]["content"] for c in dataset.conversations]
    assert len(set(prompts)) == 100
    assert sum("def " in c["messages"][-1]["content"] for c in dataset.conversations) >= 6  # code examples
    assert max(len(c["messages"][-1]["content"].split()) for c in dataset.conversations) <= 150


def test_a_bad_dataset_stops_the_run_with_exit_code_2(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', encoding="utf-8")
    write_workflow(tmp_path, dataset={"dataset_path": "bad.jsonl"}, stop_after="INPUT")
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", "wf.yaml", "--yes", "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "ENTITY_TRAINING_CACHE": str(tmp_path / "cache")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "bad.jsonl:2" in output and "'output'" in output and "Traceback" not in output
