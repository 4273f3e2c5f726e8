"""Data preparation: the plugin, the tokenized store, the cache (hits, every key input, broken entries)."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers.data_tokenizer import build_tokenizer
from helpers.dataset_splits import store_splits
from helpers.training import resolved_training_config

from entity_training import InputError, Stage
from entity_training.memory import Memory
from plugins import memory_keys
from plugins.data import cache, preparation
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data.templates import ALPACA, CHATML
from plugins.data.tokenized import load_tokenized
from plugins.data_preparation import DataPreparationPlugin


def conversation(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"The answer is {2 * i}. " * (1 + i % 4)},
        ],
        "source": {"file": "d.jsonl", "line": i + 1},
    }


TRAIN = [conversation(i) for i in range(40)]
VALIDATION = [conversation(i) for i in range(40, 45)]
OPTIONS = PreparationOptions(max_seq_length=128, chat_template="chatml")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def prepare(tmp_path, tokenizer, train=TRAIN, options=OPTIONS, **kwargs):
    return prepare_tokenized(train, VALIDATION, tokenizer, options, cache_dir=tmp_path / "cache", **kwargs)


def test_rows_follow_the_contract(tmp_path, tokenizer):
    prepared = prepare(tmp_path, tokenizer)
    rows = load_tokenized(prepared.tokenized["train"])
    assert len(rows) == prepared.stats["train"]["rows"] < len(TRAIN)  # packed
    samples = 0
    for i in range(len(rows)):
        row = rows[i]
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["labels"]) <= 128
        starts = np.cumsum([0, *row["seq_lengths"][:-1]])
        assert [row["position_ids"][s] for s in starts] == [0] * len(starts)
        assert all(row["labels"][s] == -100 for s in starts)  # loss never crosses a sample boundary
        samples += len(row["seq_lengths"])
    assert samples == len(TRAIN)
    stats = prepared.stats
    assert stats["tokens"] == rows.num_tokens and 0 < stats["trained_tokens"] < stats["tokens"]
    assert 0.5 < stats["packing_efficiency"] <= 1
    assert prepared.tokenized["validation"] and load_tokenized(prepared.tokenized["validation"])[0]["input_ids"]
    assert prepared.tokenized["chat_template"].startswith("{% set ns")
    assert {k: prepared.tokenized[k] for k in ("max_seq_length", "train_on", "packing")} == {
        "max_seq_length": 128,
        "train_on": "assistant",
        "packing": True,
    }


def test_unpacked_rows_hold_one_sample_each(tmp_path, tokenizer):
    prepared = prepare(tmp_path, tokenizer, options=dataclasses.replace(OPTIONS, packing=False))
    rows = load_tokenized(prepared.tokenized["train"])
    assert len(rows) == len(TRAIN) and all(len(rows[i]["seq_lengths"]) == 1 for i in range(len(rows)))


def test_second_run_hits_the_cache_without_tokenizing(tmp_path, tokenizer, monkeypatch):
    first = prepare(tmp_path, tokenizer)
    monkeypatch.setattr(preparation, "encode_conversations", lambda *a, **k: pytest.fail("tokenized again"))
    second = prepare(tmp_path, tokenizer)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.tokenized == first.tokenized and second.stats["tokens"] == first.stats["tokens"]


def test_rebuild_cache_forces_tokenizing(tmp_path, tokenizer):
    prepare(tmp_path, tokenizer)
    rebuilt = prepare(tmp_path, tokenizer, rebuild=True)
    assert not rebuilt.cache_hit and rebuilt.stale_reason == "rebuild_cache is set"


def changed_tokenizer_vocab():
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<extra>"])
    return tokenizer


def changed_special_token():
    tokenizer = build_tokenizer()
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"train": TRAIN[:-1]}, id="dataset rows"),
        pytest.param({"train": [*TRAIN[:-1], conversation(99)]}, id="dataset content"),
        pytest.param({"tokenizer": changed_tokenizer_vocab}, id="tokenizer vocab"),
        pytest.param({"tokenizer": changed_special_token}, id="special tokens"),
        pytest.param({"tokenizer": lambda: build_tokenizer(chat_template=ALPACA)}, id="tokenizer template"),
        pytest.param({"options": {"chat_template": "llama3"}}, id="chat_template option"),
        pytest.param({"options": {"max_seq_length": 64}}, id="max_seq_length"),
        pytest.param({"options": {"train_on": "all"}}, id="train_on"),
        pytest.param({"options": {"packing": False}}, id="packing"),
        pytest.param({"options": {"truncation": "drop"}}, id="truncation"),
        pytest.param({"code_version": "data-prep-next"}, id="code version"),
    ],
)
def test_every_key_input_changes_the_key(tmp_path, tokenizer, monkeypatch, change):
    options = dataclasses.replace(OPTIONS, chat_template="tokenizer")
    base = prepare(tmp_path, tokenizer, options=options)
    if "code_version" in change:
        monkeypatch.setattr(cache, "CODE_VERSION", change["code_version"])
    changed = prepare(
        tmp_path,
        change["tokenizer"]() if "tokenizer" in change else tokenizer,
        train=change.get("train", TRAIN),
        options=dataclasses.replace(options, **change.get("options", {})),
    )
    assert not changed.cache_hit and changed.stats["cache_key"] != base.stats["cache_key"]


def test_the_dataset_digest_depends_on_values_only():
    rebuilt = json.loads(json.dumps(TRAIN))  # new objects, same values (like a load from the parse cache)
    assert cache.dataset_digest(rebuilt) == cache.dataset_digest(TRAIN)
    edited = json.loads(json.dumps(TRAIN))
    edited[3]["messages"][1]["content"] += " "
    assert cache.dataset_digest(edited) != cache.dataset_digest(TRAIN)


def test_source_locations_do_not_change_the_key(tmp_path, tokenizer):
    moved = [{**c, "source": {"file": "elsewhere.jsonl", "line": 1}} for c in TRAIN]
    assert (
        prepare(tmp_path, tokenizer).stats["cache_key"] == prepare(tmp_path, tokenizer, train=moved).stats["cache_key"]
    )


@pytest.mark.parametrize("damage", ["truncate", "manifest", "flip"])
def test_a_broken_entry_is_rebuilt(tmp_path, tokenizer, damage):
    first = prepare(tmp_path, tokenizer)
    entry = tmp_path / "cache" / first.stats["cache_key"]
    ids = entry / "train" / "input_ids.npy"
    if damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-8])
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{not json", encoding="utf-8")
    else:
        data = bytearray(ids.read_bytes())
        data[-1] ^= 0xFF
        ids.write_bytes(bytes(data))
    again = prepare(tmp_path, tokenizer)
    assert not again.cache_hit and again.stale_reason
    assert cache.verify_entry(entry, first.stats["cache_key"]) is None
    leftovers = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".") and p.name != ".locks"]
    assert not leftovers  # no temporary folders


def test_a_failed_build_leaves_no_entry(tmp_path, tokenizer):
    bad = [
        *TRAIN,
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": "oops"},
    ]
    template = "{% if tools %}{{ raise_exception('tools unsupported') }}{% endif %}" + CHATML
    with pytest.raises(InputError, match="tools unsupported"):
        prepare(tmp_path, tokenizer, train=bad, options=dataclasses.replace(OPTIONS, chat_template=template))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".locks"]


@pytest.mark.parametrize("rebuild", [False, True])
def test_concurrent_builders_tokenize_once(tmp_path, tokenizer, monkeypatch, rebuild):
    """Like the ranks of a distributed run: one builds, the others wait and load its entry."""
    if rebuild:
        prepare(tmp_path, tokenizer)  # an existing entry that every rank asks to rebuild
    calls = []
    real_encode = preparation.encode_conversations

    def slow_encode(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # keep the lock held while the other builders arrive
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(preparation, "encode_conversations", slow_encode)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: prepare(tmp_path, tokenizer, rebuild=rebuild), range(3)))
    assert len(calls) == 2  # train and validation, once
    assert sorted(r.cache_hit for r in results) == [False, True, True]
    assert len({r.tokenized["train"] for r in results}) == 1
    assert cache.verify_entry(Path(results[0].tokenized["train"]).parent, results[0].stats["cache_key"]) is None


# -- the plugin ---------------------------------------------------------------------------------


async def run_plugin(make_context, tmp_path, tokenizer, monkeypatch, events=None, **config):
    monkeypatch.setattr("plugins.data_preparation.load_tokenizer_for", lambda name, **kwargs: (tokenizer, None))
    memory = Memory()
    store_splits(memory, tmp_path, train=TRAIN, validation=VALIDATION)
    memory.set(memory_keys.TRAINING_CONFIG, resolved_training_config(model_name_or_path="tiny"))
    context = make_context(Stage.THINK, memory=memory, events=events)
    plugin = DataPreparationPlugin({"cache_dir": str(tmp_path / "cache"), "max_seq_length": 128, **config})
    summary = await plugin.execute(context)
    return context, summary


async def test_plugin_stores_tokenized_and_stats_and_prints_the_key(tmp_path, make_context, monkeypatch, tokenizer):
    events: list = []
    context, summary = await run_plugin(make_context, tmp_path, tokenizer, monkeypatch, events=events)
    tokenized = context.recall(memory_keys.DATASET_TOKENIZED)
    stats = context.recall(memory_keys.DATASET_TOKEN_STATS)
    assert json.dumps(tokenized) and json.dumps(stats)  # persisted for --resume
    assert stats["cache_key"] in summary and "tokenized" in summary
    assert any(stats["cache_key"] in str(e) for e in events)
    assert {"tokens", "trained_tokens", "truncated_samples", "packing_efficiency"} <= set(stats)
    context, summary = await run_plugin(make_context, tmp_path, tokenizer, monkeypatch)
    assert "cache hit" in summary


async def test_plugin_warns_about_truncated_samples(tmp_path, make_context, monkeypatch, tokenizer):
    events: list = []
    await run_plugin(make_context, tmp_path, tokenizer, monkeypatch, events=events, max_seq_length=40)
    assert any("cut at max_seq_length" in str(e) for e in events)


async def test_plugin_fails_clearly_when_nothing_is_trainable(tmp_path, make_context, monkeypatch, tokenizer):
    with pytest.raises(InputError, match="no training sample has a trained token"):
        await run_plugin(make_context, tmp_path, tokenizer, monkeypatch, max_seq_length=8, truncation="drop")


def test_every_config_field_is_described():
    for name, field in DataPreparationPlugin.ConfigModel.model_fields.items():
        assert field.description, name


def test_worker_processes_give_the_same_result(tmp_path, tokenizer):
    from plugins.data.encoding import encode_conversations
    from plugins.data.templates import TemplateRenderer

    renderer = TemplateRenderer(CHATML, tokenizer)
    kwargs = {"train_on": "assistant", "max_seq_length": 64, "truncation": "right", "chunk_size": 8}
    progress: list = []
    single = encode_conversations(TRAIN, tokenizer, renderer, **kwargs)
    parallel = encode_conversations(
        TRAIN, tokenizer, renderer, num_proc=2, on_progress=lambda d, t: progress.append(d), **kwargs
    )
    assert len(parallel.input_ids) == len(single.input_ids) == len(TRAIN) - single.dropped_untrained
    assert all((a == b).all() for a, b in zip(single.input_ids, parallel.input_ids, strict=True))
    assert all((a == b).all() for a, b in zip(single.labels, parallel.labels, strict=True))
    assert (parallel.truncated, progress[-1]) == (single.truncated, len(TRAIN))
