"""The tokenized cache key is exact: it hashes the conversations' content, and tokenizers loaded
from files are hashed once per state of those files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.data_tokenizer import build_tokenizer
from helpers.training import resolved_training_config

from entity_training import InputError, Stage
from entity_training.memory import Memory
from plugins import memory_keys
from plugins.data import tokenizer_identity
from plugins.data.conversation_files import ConversationsFile, read_conversations, write_conversations
from plugins.data.dataset import load_conversations
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data_preparation import DataPreparationPlugin
from plugins.dataset_loader import DatasetLoaderPlugin

ROWS = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}."} for i in range(12)]
OPTIONS = PreparationOptions(max_seq_length=64, chat_template="chatml")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- conversations ------------------------------------------------------------------------------


def test_the_key_follows_the_content_of_the_conversations(tmp_path):
    tokenizer = build_tokenizer()
    loaded = load_conversations([write_jsonl(tmp_path / "d.jsonl", ROWS)], cache_dir=tmp_path / "loaded")

    def key(train):
        return prepare_tokenized(train, [], tokenizer, OPTIONS, cache_dir=tmp_path / "tokenized").stats["cache_key"]

    first = key(loaded.conversations)
    assert first == key(load_conversations([tmp_path / "d.jsonl"], cache_dir=tmp_path / "loaded").conversations)
    assert first == key(load_conversations([tmp_path / "d.jsonl"]).conversations)  # parsed again: same content
    edited = loaded.conversations
    edited.append(dict(edited[0]))
    assert key(edited) != first


def test_a_warm_hit_does_not_hash_the_vocabulary(tmp_path, monkeypatch):
    folder = saved_tokenizer(tmp_path / "tok")
    tokenizer, files = load_saved(folder)
    loaded = load_conversations([write_jsonl(tmp_path / "d.jsonl", ROWS)], cache_dir=tmp_path / "loaded")
    first = prepare_tokenized(
        loaded.conversations, [], tokenizer, OPTIONS, cache_dir=tmp_path / "tokenized", tokenizer_files=files
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


# -- plugins between loading and tokenizing ---------------------------------------------------


async def test_a_plugin_that_rewrites_the_rows_gets_a_new_cache_key(tmp_path, monkeypatch, make_context):
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)

    async def cache_key(edit) -> str:
        memory = Memory()
        memory.set(memory_keys.TRAINING_CONFIG, resolved_training_config(model_name_or_path="tiny"))
        await DatasetLoaderPlugin({"dataset_path": str(path)}).execute(make_context(Stage.INPUT, memory=memory))
        if edit:  # a third-party cleaning step that rewrites text and remembers the new split
            rows = read_conversations(memory.get(memory_keys.DATASET_TRAIN))
            for conversation in rows:
                conversation["messages"][-1]["content"] += " (checked)"
            memory.set(memory_keys.DATASET_TRAIN, write_conversations(tmp_path, "cleaned", rows))
        preparation = DataPreparationPlugin({"max_seq_length": 64, "chat_template": "chatml"})
        await preparation.execute(make_context(Stage.THINK, memory=memory))
        return memory.get(memory_keys.DATASET_TOKEN_STATS)["cache_key"]

    untouched = await cache_key(edit=False)
    assert await cache_key(edit=False) == untouched
    assert await cache_key(edit=True) != untouched


async def test_a_split_edited_behind_the_runs_back_is_an_input_error(tmp_path, make_context):
    memory = Memory()
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    await DatasetLoaderPlugin({"dataset_path": str(path)}).execute(make_context(Stage.INPUT, memory=memory))
    entry = memory.get(memory_keys.DATASET_TRAIN)
    Path(entry.path).write_text("{}\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed after it was written"):
        read_conversations(entry)


def test_a_split_entry_survives_memory_json(tmp_path):
    memory = Memory()
    memory.set(memory_keys.DATASET_TRAIN, write_conversations(tmp_path, "train", ROWS))
    memory.save(tmp_path)
    entry = Memory.load(tmp_path).get(memory_keys.DATASET_TRAIN)
    assert isinstance(entry, ConversationsFile) and entry.rows == len(ROWS) and read_conversations(entry) == ROWS
    assert read_conversations(None) == []
    with pytest.raises(InputError, match="not a file entry"):
        read_conversations(ROWS)  # what memory.json held before the splits moved to files
