"""INPUT -> PARSE -> THINK through the executor with the built-in ``tiny`` tokenizer: the sample
data tokenizes, the second run hits the cache, and the preview shows it."""

from __future__ import annotations

import pytest
from helpers.workflows import write_workflow
from rich.console import Console

from entity_training import Stage
from entity_training.executor import WorkflowExecutor
from entity_training.workflow import load_workflow
from plugins import memory_keys
from plugins.data.preview import print_preview
from plugins.data.tokenized import load_tokenized


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("entity-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENTITY_TRAINING_CACHE", str(root))
        yield root


@pytest.mark.slow
async def test_sample_data_through_input_parse_think(tmp_path, model_cache):
    path = write_workflow(
        tmp_path,
        run={"name": "data", "seed": 3},
        dataset={"validation_split": 0.1},
        preparation={"max_seq_length": 512, "cache_dir": tmp_path / "tokenized"},
        stop_after="THINK",
    )

    first = await WorkflowExecutor(load_workflow(path), tmp_path / "run1").run(stop_after=Stage.THINK)
    assert first.status == "success", first.error
    tokenized = first.memory.get(memory_keys.DATASET_TOKENIZED)
    stats = first.memory.get(memory_keys.DATASET_TOKEN_STATS)
    assert stats["train"]["samples"] == 90 and stats["validation"]["samples"] == 10 and not stats["cache_hit"]
    assert stats["truncated_samples"] == 0 and stats["packing_efficiency"] > 0.8
    rows = load_tokenized(tokenized["train"])
    assert sum(len(rows[i]["seq_lengths"]) for i in range(len(rows))) == 90

    from plugins.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    assert tokenized["chat_template"] == tokenizer.chat_template  # the tokenizer's own template by default
    console = Console(record=True, width=100)
    print_preview(tokenized, tokenizer, n=2, console=console)
    assert "sample 2" in console.export_text()

    second = await WorkflowExecutor(load_workflow(path), tmp_path / "run2").run(stop_after=Stage.THINK)
    assert second.memory.get(memory_keys.DATASET_TOKEN_STATS)["cache_hit"]
    assert second.memory.get(memory_keys.DATASET_TOKENIZED) == tokenized


@pytest.mark.slow
def test_tiny_template_masks_replies_and_tool_calls(model_cache):
    from plugins.data.encoding import IGNORE_INDEX, encode_conversations
    from plugins.data.templates import TemplateRenderer
    from plugins.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "It is 3 degrees."},
    ]
    encoded = encode_conversations(
        [{"messages": messages, "tools": [{"name": "weather"}]}],
        tokenizer,
        TemplateRenderer(tokenizer.chat_template, tokenizer),
        train_on="assistant",
        max_seq_length=4096,
        truncation="right",
    )
    ids, labels = encoded.input_ids[0], encoded.labels[0]
    trained = tokenizer.decode(ids[labels != IGNORE_INDEX].tolist())
    assert (
        trained
        == '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>It is 3 degrees.<|im_end|>'
    )
