"""The warm path's shortcuts keep the cache key exact: loaded lists carry their digest, tokenizers
loaded from files are hashed once per state of those files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.data_tokenizer import build_tokenizer

from entity_training import Stage
from plugins import memory_keys
from plugins.data import cache, tokenizer_identity
from plugins.data.dataset import load_conversations, split_conversations
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data.rows import DigestedConversations, known_digest, select
from plugins.dataset_loader import DatasetLoaderPlugin

ROWS = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}."} for i in range(12)]
OPTIONS = PreparationOptions(max_seq_length=64, chat_template="chatml")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def content_digest(conversations) -> str:
    return cache.dataset_digest(list(conversations))  # a plain list: hashed by content


# -- conversation lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: rows.append(rows[0]),
        lambda rows: rows.extend(rows[:1]),
        lambda rows: rows.insert(0, rows[-1]),
        lambda rows: rows.pop(),
        lambda rows: rows.remove(rows[0]),
        lambda rows: rows.sort(key=lambda row: row["n"], reverse=True),
        lambda rows: rows.reverse(),
        lambda rows: rows.clear(),
        lambda rows: rows.__setitem__(0, {"n": 99}),
        lambda rows: rows.__setitem__(slice(0, 1), []),
        lambda rows: rows.__delitem__(0),
        lambda rows: rows.__iadd__([{"n": 5}]),
        lambda rows: rows.__imul__(2),
    ],
)
def test_changing_a_digested_list_forgets_its_digest(change):
    rows = DigestedConversations([{"n": i} for i in range(4)], "loaded:abc")
    change(rows)
    assert known_digest(rows) is None and rows.digest is None


def test_selections_have_their_own_digest_and_plain_lists_none():
    rows = DigestedConversations([{"n": i} for i in range(6)], "loaded:abc")
    first, same, other = select(rows, [3, 1, 2]), select(rows, [3, 1, 2]), select(rows, [1, 3, 2])
    assert [r["n"] for r in first] == [3, 1, 2]
    assert known_digest(first) == known_digest(same) != known_digest(other)
    assert known_digest(first) not in (None, rows.digest)
    assert known_digest(select([{"n": 1}], [0])) is None
    assert known_digest(rows[1:]) is None  # a slice is a new plain list
    assert json.loads(json.dumps(rows)) == list(rows)  # memory.json stores it as a plain array


def test_loaded_lists_carry_a_digest_that_follows_the_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    cold = load_conversations([path], cache_dir=tmp_path / "loaded")
    warm = load_conversations([path], cache_dir=tmp_path / "loaded")
    assert known_digest(cold.conversations) == known_digest(warm.conversations) is not None
    assert known_digest(load_conversations([path]).conversations) is None  # no cache, no index: hashed later
    write_jsonl(path, [*ROWS[:-1], {"instruction": "What is 1 plus 1?", "output": "Two."}])
    assert known_digest(load_conversations([path], cache_dir=tmp_path / "loaded").conversations) not in (
        None,
        known_digest(cold.conversations),
    )


def test_a_split_of_a_loaded_list_keeps_digests_that_depend_on_the_seed(tmp_path):
    loaded = load_conversations([write_jsonl(tmp_path / "d.jsonl", ROWS)], cache_dir=tmp_path / "loaded")
    train, validation = split_conversations(loaded.conversations, 0.25, seed=1)
    again = split_conversations(loaded.conversations, 0.25, seed=1)
    other = split_conversations(loaded.conversations, 0.25, seed=2)
    assert (known_digest(train), known_digest(validation)) == (known_digest(again[0]), known_digest(again[1]))
    assert known_digest(train) != known_digest(other[0]) and known_digest(train) != known_digest(validation)
    assert train == split_conversations(list(loaded.conversations), 0.25, seed=1)[0]  # same rows as before


async def test_loader_plugin_hands_digested_splits_to_the_next_stage(tmp_path, make_context, monkeypatch):
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)

    async def digests(**config):
        context = make_context(Stage.INPUT)
        await DatasetLoaderPlugin({"dataset_path": str(path), "seed": 3, **config}).execute(context)
        train, validation = context.recall(memory_keys.DATASET_TRAIN), context.recall(memory_keys.DATASET_VALIDATION)
        return known_digest(train), known_digest(validation)

    base = await digests()
    assert None not in base and base == await digests()
    assert len({base, await digests(max_samples=8), await digests(seed=4), await digests(shuffle=False)}) == 4
    assert await digests(reuse_parsed=False) == (None, None)


def test_the_key_of_a_changed_loaded_list_is_its_content_key(tmp_path):
    tokenizer = build_tokenizer()
    loaded = load_conversations([write_jsonl(tmp_path / "d.jsonl", ROWS)], cache_dir=tmp_path / "loaded")

    def key(train):
        return prepare_tokenized(train, [], tokenizer, OPTIONS, cache_dir=tmp_path / "tokenized").stats["cache_key"]

    by_provenance = key(loaded.conversations)
    assert by_provenance == key(load_conversations([tmp_path / "d.jsonl"], cache_dir=tmp_path / "loaded").conversations)
    edited = loaded.conversations
    edited.append(dict(edited[0]))
    assert key(edited) == key(list(edited)) != by_provenance


def test_a_warm_hit_hashes_neither_the_conversations_nor_the_vocabulary(tmp_path, monkeypatch):
    folder = saved_tokenizer(tmp_path / "tok")
    tokenizer, files = load_saved(folder)
    loaded = load_conversations([write_jsonl(tmp_path / "d.jsonl", ROWS)], cache_dir=tmp_path / "loaded")
    first = prepare_tokenized(
        loaded.conversations, [], tokenizer, OPTIONS, cache_dir=tmp_path / "tokenized", tokenizer_files=files
    )
    dumps = cache.marshal.dumps
    monkeypatch.setattr(
        cache.marshal, "dumps", lambda value, *a: pytest.fail("hashed the conversations") if value else dumps(value, *a)
    )
    monkeypatch.setattr(tokenizer_identity, "vocabulary_digest", lambda *a: pytest.fail("hashed the vocabulary"))
    again = load_conversations([tmp_path / "d.jsonl"], cache_dir=tmp_path / "loaded")
    second = prepare_tokenized(
        again.conversations, [], tokenizer, OPTIONS, cache_dir=tmp_path / "tokenized", tokenizer_files=files
    )
    assert second.cache_hit and second.stats["cache_key"] == first.stats["cache_key"]


# -- tokenizer digest memo ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    """Files written by the test are trusted at once (the real window waits 2 s after a change)."""
    monkeypatch.setattr(tokenizer_identity, "RACY_WINDOW_NS", 0)


def saved_tokenizer(folder: Path, **kwargs) -> Path:
    build_tokenizer(**kwargs).save_pretrained(folder)
    time.sleep(0.01)  # loading starts strictly after the files' last change
    return folder


def load_saved(folder: Path):
    from transformers import AutoTokenizer

    started = time.time_ns()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer, tokenizer_identity.source_files(tokenizer, started)


def digest(tokenizer, files, memo_dir) -> str:
    return tokenizer_identity.tokenizer_digest(tokenizer, "template", files=files, memo_dir=memo_dir)


def test_the_memo_gives_the_content_digest_without_hashing_again(tmp_path, monkeypatch):
    tokenizer, files = load_saved(saved_tokenizer(tmp_path / "tok"))
    assert files is not None and "tokenizer.json" in [name for name, *_ in files.files]
    by_content = tokenizer_identity.tokenizer_digest(tokenizer, "template")
    assert digest(tokenizer, files, tmp_path / "memo") == by_content
    monkeypatch.setattr(tokenizer_identity, "vocabulary_digest", lambda *a: pytest.fail("hashed again"))
    reloaded, files_again = load_saved(tmp_path / "tok")
    assert files_again == files and digest(reloaded, files_again, tmp_path / "memo") == by_content


def test_a_changed_tokenizer_file_is_hashed_again(tmp_path):
    folder = saved_tokenizer(tmp_path / "tok")
    tokenizer, files = load_saved(folder)
    before = digest(tokenizer, files, tmp_path / "memo")
    saved = json.loads((folder / "tokenizer.json").read_text())
    vocab = saved["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[-2:]  # same size, same vocabulary size: two ids swapped
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (folder / "tokenizer.json").write_text(json.dumps(saved))
    time.sleep(0.01)
    changed, changed_files = load_saved(folder)
    assert changed_files != files
    assert digest(changed, changed_files, tmp_path / "memo") == tokenizer_identity.tokenizer_digest(changed, "template")
    assert digest(changed, changed_files, tmp_path / "memo") != before


def test_changes_made_after_loading_change_the_digest_despite_the_memo(tmp_path):
    tokenizer, files = load_saved(saved_tokenizer(tmp_path / "tok"))
    before = digest(tokenizer, files, tmp_path / "memo")
    tokenizer.add_tokens(["<extra>"])
    assert digest(tokenizer, files, tmp_path / "memo") != before
    special, special_files = load_saved(tmp_path / "tok")
    special.eos_token = "<|im_end|>"
    assert digest(special, special_files, tmp_path / "memo") != before


def test_a_tokenizer_without_files_is_hashed_by_content(tmp_path):
    in_memory = build_tokenizer()
    assert tokenizer_identity.source_files(in_memory, time.time_ns()) is None
    other = build_tokenizer()
    other.add_tokens(["<extra>"])
    assert tokenizer_identity.tokenizer_digest(in_memory, "t") != tokenizer_identity.tokenizer_digest(other, "t")
    assert tokenizer_identity.tokenizer_digest(in_memory, "t") != tokenizer_identity.tokenizer_digest(in_memory, "u")


def test_files_changed_during_loading_are_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_identity, "RACY_WINDOW_NS", 2_000_000_000)
    folder = saved_tokenizer(tmp_path / "tok")  # written a moment ago: within the window
    from transformers import AutoTokenizer

    started = time.time_ns()
    assert tokenizer_identity.source_files(AutoTokenizer.from_pretrained(folder), started) is None


# -- plugins that hold the rows between loading and tokenizing -------------------------------------


async def test_rows_edited_in_place_by_another_plugin_get_a_new_cache_key(tmp_path, monkeypatch):
    import threading

    from entity_training.context import PluginContext
    from entity_training.events import EventBus
    from entity_training.memory import Memory
    from entity_training.registry import ToolRouter
    from plugins.data_preparation import DataPreparationPlugin

    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)

    def context(memory: Memory, stage: Stage, plugin: str) -> PluginContext:
        return PluginContext(
            memory=memory,
            bus=EventBus(),
            tools=ToolRouter(),
            run_dir=tmp_path,
            stage=stage,
            plugin_name=plugin,
            cancel_event=threading.Event(),
        )

    async def cache_key(edit) -> str:
        memory = Memory()
        memory.set(memory_keys.TRAINING_CONFIG, {"model_name_or_path": "tiny"})
        await DatasetLoaderPlugin({"dataset_path": str(path)}).execute(context(memory, Stage.INPUT, "dataset_loader"))
        if edit:  # a third-party cleaning step that rewrites text in the dicts it was handed
            for conversation in context(memory, Stage.PARSE, "cleaner").recall(memory_keys.DATASET_TRAIN):
                conversation["messages"][-1]["content"] += " (checked)"
        preparation = DataPreparationPlugin({"max_seq_length": 64, "chat_template": "chatml"})
        await preparation.execute(context(memory, Stage.THINK, "data_preparation"))
        return memory.get(memory_keys.DATASET_TOKEN_STATS)["cache_key"]

    untouched = await cache_key(edit=False)
    assert await cache_key(edit=False) == untouched
    assert await cache_key(edit=True) != untouched
