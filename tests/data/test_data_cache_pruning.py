"""The tokenized cache stays bounded: least recently used entries go, never the new one or one in use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.data_tokenizer import build_tokenizer
from helpers.dataset_splits import store_splits
from helpers.training import resolved_training_config

from entity_training import InputError, Stage
from entity_training.memory import Memory
from plugins import memory_keys
from plugins.data import cache_pruning
from plugins.data.cache import MANIFEST
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.data.tokenized import load_tokenized
from plugins.data_preparation import DataPreparationPlugin

pytestmark = pytest.mark.skipif(cache_pruning.fcntl is None, reason="no fcntl: use cannot be seen, nothing is pruned")

TRAIN = [
    {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}]}
    for i in range(6)
]
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def finished_processes(monkeypatch):
    """Entries written now count as written by runs that have ended (this process keeps no mark on them)."""
    monkeypatch.setattr(cache_pruning, "hold", lambda cache_dir, key: None)


def prepare(cache_dir: Path, tokenizer, length: int, **kwargs):
    options = PreparationOptions(max_seq_length=length, chat_template="chatml")
    return prepare_tokenized(TRAIN, [], tokenizer, options, cache_dir=cache_dir, **kwargs)


def fill(cache_dir: Path, tokenizer, lengths: list[int]) -> list[str]:
    """One entry per length, used in that order (the first is the least recently used)."""
    keys = [prepare(cache_dir, tokenizer, length).stats["cache_key"] for length in lengths]
    for age, key in enumerate(reversed(keys), start=1):
        os.utime(cache_dir / key / MANIFEST, ns=(0, (1_000_000_000 - age) * 10**9))
    return keys


def entries(cache_dir: Path) -> set[str]:
    return {path.name for path in cache_dir.iterdir() if path.is_dir() and not path.name.startswith(".")}


def test_the_least_recently_used_entries_beyond_the_limit_are_removed(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    keys = fill(cache_dir, tokenizer, [32, 40, 48, 56])
    new = prepare(cache_dir, tokenizer, 64, max_entries=3)
    assert {removed.key for removed in new.pruned} == set(keys[:2])
    assert all(removed.bytes > 0 for removed in new.pruned)
    assert entries(cache_dir) == {*keys[2:], new.stats["cache_key"]}
    assert not [path for path in (cache_dir / ".locks").iterdir() if path.name.startswith(tuple(keys[:2]))]


def test_a_hit_makes_an_entry_recent(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    oldest, *_ = fill(cache_dir, tokenizer, [32, 40, 48])
    assert prepare(cache_dir, tokenizer, 32).cache_hit
    new = prepare(cache_dir, tokenizer, 64, max_entries=2)
    assert oldest in entries(cache_dir) and len(entries(cache_dir)) == 2 and new.pruned


def test_the_new_entry_stays_even_when_it_is_the_oldest(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    fill(cache_dir, tokenizer, [32, 40])
    key = prepare(cache_dir, tokenizer, 64).stats["cache_key"]
    os.utime(cache_dir / key / MANIFEST, ns=(0, 10**9))  # a clock set back while it was written
    removed = cache_pruning.prune(cache_dir, keep=1, protect=key)
    assert entries(cache_dir) == {key} and len(removed) == 2


def test_no_limit_keeps_everything(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    fill(cache_dir, tokenizer, [32, 40, 48])
    assert prepare(cache_dir, tokenizer, 64).pruned == [] and len(entries(cache_dir)) == 4


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from plugins.data import cache_pruning
    cache_pruning.hold(Path(sys.argv[1]), sys.argv[2])
    print("held", flush=True)
    sys.stdin.readline()
    """
)


def test_an_entry_in_use_by_a_live_process_is_kept_until_it_exits(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    used, other = fill(cache_dir, tokenizer, [32, 40])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache_dir), used, str(REPOSITORY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        first = prepare(cache_dir, tokenizer, 64, max_entries=1)
        assert [removed.key for removed in first.pruned] == [other] and used in entries(cache_dir)
    finally:
        holder.communicate("\n", timeout=30)
    second = prepare(cache_dir, tokenizer, 72, max_entries=1)
    assert used in {removed.key for removed in second.pruned} and used not in entries(cache_dir)


def test_entries_this_process_prepared_are_in_use(tmp_path, tokenizer):
    cache_dir = tmp_path / "cache"
    first = prepare(cache_dir, tokenizer, 32).stats["cache_key"]
    new = prepare(cache_dir, tokenizer, 64, max_entries=1)
    assert new.pruned == [] and first in entries(cache_dir)


def test_leftovers_of_crashed_builds_are_removed(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    key = fill(cache_dir, tokenizer, [32])[0]
    staging, trash = cache_dir / f".{key}.abc123.tmp", cache_dir / f".{key}.def456.old"
    for leftover in (staging, trash):
        (leftover / "train").mkdir(parents=True)
    prepare(cache_dir, tokenizer, 64, max_entries=5)
    assert not staging.exists() and not trash.exists() and key in entries(cache_dir)


async def test_the_plugin_logs_what_it_removed(tmp_path, make_context, monkeypatch, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    old = fill(cache_dir, tokenizer, [32, 40])
    monkeypatch.setattr("plugins.data_preparation.load_tokenizer_for", lambda name, **kwargs: (tokenizer, None))
    memory = Memory()
    store_splits(memory, tmp_path, train=TRAIN)
    memory.set(memory_keys.TRAINING_CONFIG, resolved_training_config(model_name_or_path="tiny"))
    events: list = []
    context = make_context(Stage.THINK, memory=memory, events=events)
    config = {"cache_dir": str(cache_dir), "max_seq_length": 64, "cache_max_entries": 1, "chat_template": "chatml"}
    await DataPreparationPlugin(config).execute(context)
    logged = [str(event) for event in events if "least recently used" in str(event)]
    assert len(logged) == 1 and all(key in logged[0] for key in old) and "2 least recently used" in logged[0]
    assert len(entries(cache_dir)) == 1


def test_opening_a_removed_entry_says_what_happened(tmp_path, tokenizer, finished_processes):
    cache_dir = tmp_path / "cache"
    prepared = prepare(cache_dir, tokenizer, 32)
    prepare(cache_dir, tokenizer, 64, max_entries=1)
    with pytest.raises(InputError, match="cache_max_entries") as caught:
        load_tokenized(prepared.tokenized["train"])
    assert caught.value.exit_code == 2
