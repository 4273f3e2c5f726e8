"""Property tests: whatever a dataset file holds, the loader either loads it or says what is wrong.

Random JSON Lines rows, JSON documents, CSV text and raw bytes are written to a file and loaded
through the DatasetLoader plugin (cache on, so the parsed-file cache is exercised too). The only
acceptable outcomes are a successful load with well-formed conversations, or our own InputError /
ConfigError with a non-empty message; any other exception is a bug. Each load runs with a time
limit, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entity_training import ConfigError, InputError, Stage
from entity_training.context import PluginContext
from entity_training.events import EventBus
from entity_training.memory import Memory
from entity_training.registry import ToolRouter
from plugins import memory_keys
from plugins.data.conversation_files import read_conversations
from plugins.dataset_loader import DatasetLoaderPlugin

LOAD_TIMEOUT_S = 60
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = [
    "instruction", "input", "output", "system", "history", "conversations", "from", "value",
    "messages", "role", "content", "prompt", "completion", "text", "data", "tool_calls", "tools",
]  # fmt: skip
ROLES = ["user", "assistant", "system", "tool", "human", "gpt", "function_call", "observation", "wizard", ""]

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    scalars | st.sampled_from(ROLES),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
# Rows that look almost right: the known keys with random values, turns with random roles.
turns = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(ROLES),
            "content": st.text(max_size=30) | scalars,
            "from": st.sampled_from(ROLES),
            "value": st.text(max_size=30),
        },
    ),
    max_size=4,
)
near_rows = st.fixed_dictionaries(
    {},
    optional={
        "instruction": st.text(max_size=30) | scalars,
        "input": st.text(max_size=30) | scalars,
        "output": st.text(max_size=30) | scalars,
        "messages": turns | json_values,
        "conversations": turns,
        "prompt": st.text(max_size=30),
        "completion": st.text(max_size=30) | scalars,
        "text": st.text(max_size=30) | scalars,
    },
)
rows = near_rows | json_values


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """The parsed-file cache is used (it is part of loading), but not the user's own."""
    saved = os.environ.get("ENTITY_TRAINING_CACHE")
    os.environ["ENTITY_TRAINING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("ENTITY_TRAINING_CACHE", None)
    else:
        os.environ["ENTITY_TRAINING_CACHE"] = saved


def _context(run_dir: Path) -> PluginContext:
    return PluginContext(
        memory=Memory(),
        bus=EventBus(),
        tools=ToolRouter(),
        run_dir=run_dir,
        stage=Stage.INPUT,
        plugin_name="dataset_loader",
        cancel_event=threading.Event(),
    )


def _load(name: str, content: bytes, **config) -> None:
    """Load one file; assert the outcome is a valid dataset or our own error with a message."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        context = _context(Path(tmp))
        plugin = DatasetLoaderPlugin({"dataset_path": str(path), "validation_split": 0.0, **config})
        try:
            asyncio.run(asyncio.wait_for(plugin.execute(context), LOAD_TIMEOUT_S))
        except (InputError, ConfigError) as exc:
            assert str(exc).strip(), "our error carries a message"
            return
        conversations = read_conversations(context.recall(memory_keys.DATASET_TRAIN))
        assert conversations, "a successful load holds at least one conversation"
        for conversation in conversations:
            messages = conversation["messages"]
            assert all(isinstance(m["content"], str) for m in messages)
            assert all(m["role"] in ("system", "user", "assistant", "tool") for m in messages)


def _jsonl(values: list) -> bytes:
    return "".join(json.dumps(v) + "\n" for v in values).encode()


@FUZZ
@given(st.lists(rows, max_size=6), st.sampled_from(["error", "skip"]))
def test_random_jsonl_rows(values, on_bad_rows):
    _load("data.jsonl", _jsonl(values), on_bad_rows=on_bad_rows)


@FUZZ
@given(json_values | st.lists(rows, max_size=6) | st.fixed_dictionaries({"data": st.lists(rows, max_size=4)}))
def test_random_json_documents(document):
    _load("data.json", json.dumps(document, indent=1).encode())


@FUZZ
@given(st.lists(st.lists(st.text(max_size=15), min_size=1, max_size=4), max_size=5), st.booleans())
def test_random_csv(table, known_header):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if known_header:
        writer.writerow(["instruction", "input", "output"][: len(table[0]) if table else 3])
    writer.writerows(table)
    _load("data.csv", buffer.getvalue().encode())


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["data.jsonl", "data.json", "data.csv", "data.txt", "data.parquet"]))
def test_random_bytes(content, name):
    _load(name, content)


@FUZZ
@given(st.lists(rows, min_size=1, max_size=4), st.integers(min_value=0, max_value=200), st.binary(max_size=8))
def test_truncated_or_spliced_jsonl(values, cut, garbage):
    """A file cut short or with stray bytes in the middle (an interrupted copy)."""
    content = _jsonl(values)
    cut = min(cut, len(content))
    _load("data.jsonl", content[:cut] + garbage + content[cut:])
