"""dataset_loader with several sources, shards and Hub datasets; the mixture that data_preparation
builds from them (realised shares, the cache key), on generated rows and on real datasets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.data_tokenizer import build_tokenizer
from helpers.workflows import REPO
from pydantic import ValidationError

from entity_training import InputError, Stage
from plugins import memory_keys
from plugins.data.conversation_files import read_conversations
from plugins.data.dataset import load_conversations
from plugins.data.preparation import PreparationOptions, prepare_tokenized
from plugins.dataset_loader import DatasetLoaderPlugin

SHARED = REPO.parent / "shared" / "datasets"
ALPACA, GLAIVE = SHARED / "alpaca_en_demo.json", SHARED / "glaive_toolcall_en_demo.json"
needs_shared = pytest.mark.skipif(not GLAIVE.is_file(), reason=f"{SHARED} is absent (third-party datasets)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTITY_TRAINING_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_rows(prefix: str, count: int, answer_words: int = 1) -> list[dict]:
    return [
        {"instruction": f"{prefix} question {i}?", "output": " ".join(["word"] * answer_words)} for i in range(count)
    ]


async def load(make_context, **config):
    context = make_context(Stage.INPUT)
    await DatasetLoaderPlugin(config).execute(context)
    train, validation = (
        read_conversations(context.recall(key)) for key in (memory_keys.DATASET_TRAIN, memory_keys.DATASET_VALIDATION)
    )
    return train, validation, context.recall(memory_keys.DATASET_STATS)


async def test_sources_keep_their_names_settings_and_own_validation_split(tmp_path, make_context):
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"q": f"Q{i}", "a": f"A{i}"} for i in range(40)])
    qa = write_jsonl(tmp_path / "qa.jsonl", qa_rows("qa", 10))
    train, validation, stats = await load(
        make_context,
        sources=[
            {"path": str(chat), "field_map": {"q": "prompt", "a": "completion"}, "max_samples": 30, "weight": 2},
            {"path": str(qa), "name": "small", "format": "alpaca"},
        ],
        validation_split=0.2,
        mix_by="rows",
        seed=5,
    )
    names = [c["source"]["name"] for c in train + validation]
    assert names.count("chat") == 30 and names.count("small") == 10
    # held out per source, in proportion to its size
    assert sorted(c["source"]["name"] for c in validation) == ["chat"] * 6 + ["small"] * 2
    assert stats["sources"]["chat"] | {"files": None} == {
        "path": str(chat),
        "files": None,
        "weight": 2.0,
        "rows": 30,
        "train_rows": 24,
        "validation_rows": 6,
    }
    assert stats["mixture"] == {"mix_by": "rows", "weights": {"chat": 2.0, "small": 1.0}, "seed": 5}


async def test_one_source_gives_the_rows_of_dataset_path(tmp_path, make_context):
    path = write_jsonl(tmp_path / "d.jsonl", qa_rows("d", 25))
    single = await load(make_context, dataset_path=str(path), validation_split=0.2, max_samples=20, seed=2)
    sourced = await load(make_context, sources=[{"path": str(path), "max_samples": 20}], validation_split=0.2, seed=2)
    for rows, named in zip(single[:2], sourced[:2], strict=True):
        assert [c["source"] for c in rows] == [{k: v for k, v in c["source"].items() if k != "name"} for c in named]
        assert [c["messages"] for c in rows] == [c["messages"] for c in named]
    assert "name" not in single[0][0]["source"] and "mixture" not in single[2]


def test_shards_in_a_folder_and_a_glob_come_in_sorted_order(tmp_path):
    import datasets

    shards = tmp_path / "shards"
    for number in (2, 10, 1):
        datasets.Dataset.from_list(qa_rows(f"p{number}", 3)).to_parquet(str(shards / f"part-{number:02d}.parquet"))
    write_jsonl(shards / "extra" / "more.jsonl", qa_rows("j", 2))
    by_glob = load_conversations([str(shards / "*.parquet")])
    assert [Path(f.path).name for f in by_glob.files] == ["part-01.parquet", "part-02.parquet", "part-10.parquet"]
    assert [c["messages"][0]["content"] for c in by_glob.conversations[:4]] == [
        "p1 question 0?",
        "p1 question 1?",
        "p1 question 2?",
        "p2 question 0?",
    ]
    recursive = load_conversations([str(shards / "**" / "*.jsonl")])
    assert [Path(f.path).name for f in recursive.files] == ["more.jsonl"]
    folder = load_conversations([str(shards)])
    assert len(folder.conversations) == 11 and [f.path for f in folder.files] == sorted(f.path for f in folder.files)
    with pytest.raises(InputError, match=r"the pattern matches no data file;.*Check dataset_path"):
        load_conversations([str(shards / "*.csv")])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dataset_path": "a.jsonl", "sources": [{"path": "b.jsonl"}]}, "not both"),
        ({}, "set dataset_path (a file, folder or glob"),
        ({"sources": [{"path": "x/a.jsonl"}, {"path": "y/a.jsonl"}]}, "several sources are named 'a'"),
        ({"sources": [{"path": "a.jsonl"}], "dataset_format": "alpaca"}, "set format on each source"),
        ({"sources": [{"path": "a.jsonl"}], "max_samples": 3}, "set max_samples on each source"),
        ({"dataset_path": "a.jsonl", "mix_by": "rows"}, "mix_by applies to sources"),
        ({"sources": [{"path": "a.jsonl", "weight": float("inf")}]}, "finite number"),
        ({"sources": [{"path": "a.jsonl", "name": "has space"}]}, "should match pattern"),
    ],
)
def test_the_loader_config_refuses_contradictions(config, message):
    with pytest.raises(ValidationError) as raised:
        DatasetLoaderPlugin.ConfigModel.model_validate(config)
    assert message in str(raised.value)


def test_a_hub_path_that_is_not_owner_name_is_refused():
    with pytest.raises(InputError, match="is not a Hub dataset path"):
        load_conversations(["hf://just-a-name"])


def fabricate_hub_cache(hf_home: Path, repo: str, rows: list[dict], build: Path) -> None:
    """A real ``datasets`` cache entry for the Hub dataset ``repo``, as a first online load leaves it.

    The rows are prepared by datasets' own JSON builder; the folder is then named as a Hub dataset's
    is (``<owner>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow``), where the offline loader
    of ``datasets`` looks for it.
    """
    import datasets

    source = write_jsonl(build / "rows.jsonl", rows)
    builder = datasets.load_dataset_builder("json", data_files={"train": str(source)}, cache_dir=str(build / "c"))
    builder.download_and_prepare()
    owner, name = repo.split("/")
    entry = hf_home / "datasets" / f"{owner}___{name}" / "default" / "0.0.0" / ("0" * 40)
    entry.mkdir(parents=True)
    shutil.copy(Path(builder.cache_dir) / "json-train.arrow", entry / f"{name}-train.arrow")
    info = json.loads((Path(builder.cache_dir) / "dataset_info.json").read_text())
    (entry / "dataset_info.json").write_text(json.dumps(info | {"config_name": "default", "dataset_name": name}))


def test_a_hub_dataset_loads_offline_from_the_datasets_cache(tmp_path):
    hf_home = tmp_path / "hf"
    fabricate_hub_cache(hf_home, "someorg/demo", qa_rows("hub", 4), tmp_path / "build")
    script = textwrap.dedent(
        """
        import json
        from plugins.data.dataset import load_conversations
        loaded = load_conversations(["hf://someorg/demo@train"])
        print(json.dumps([loaded.files[0].path, loaded.files[0].format, loaded.conversations[1]]))
        try:
            load_conversations(["hf://someorg/never-loaded"])
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    # The variables are read when datasets is imported, so the load runs in a process of its own.
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    where, fmt, conversation = json.loads(lines[0])
    assert (where, fmt) == ("hf://someorg/demo@train", "alpaca")
    assert conversation["messages"][0]["content"] == "hub question 1?"
    assert conversation["source"] == {"file": "hf://someorg/demo@train", "index": 1}
    assert lines[1].startswith("InputError HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set")
    assert "hf://someorg/never-loaded@train is not in the datasets cache" in lines[1]
    assert "Run once with network access" in lines[1]


def prepare(train, validation, mixture, tmp_path, **options):
    options = PreparationOptions(**{"max_seq_length": 512, **options})
    return prepare_tokenized(
        train, validation, build_tokenizer(), options, cache_dir=tmp_path / "tokenized", mixture=mixture
    )


def check_shares(mixture_stats, unit: str, tolerance: float) -> None:
    share = "share_tokens" if unit == "tokens" else "share_rows"
    for entry in mixture_stats["sources"].values():
        assert abs(entry[share] - entry["target_share"]) <= tolerance, mixture_stats


@pytest.mark.parametrize("unit", ["rows", "tokens"])
async def test_mixing_generated_sources_reaches_the_target_shares(tmp_path, make_context, unit):
    # short answers (about 3 trained tokens) and long ones (about 60): by rows and by tokens differ a lot
    short = write_jsonl(tmp_path / "short.jsonl", qa_rows("s", 200))
    long = write_jsonl(tmp_path / "long.jsonl", qa_rows("l", 40, answer_words=30))
    train, validation, stats = await load(
        make_context,
        sources=[{"path": str(short), "weight": 1}, {"path": str(long), "weight": 3}],
        mix_by=unit,
        seed=1,
    )
    prepared = prepare(train, validation, stats["mixture"], tmp_path)
    mixture = prepared.stats["mixture"]
    per_sample = {
        name: entry["available_trained_tokens"] / entry["available_rows"] for name, entry in mixture["sources"].items()
    }
    total = sum(e["trained_tokens" if unit == "tokens" else "rows"] for e in mixture["sources"].values())
    # Within one sample of the target: the samples of a source are alike here, so 1.5 x its mean bounds its largest.
    check_shares(mixture, unit, (max(per_sample.values()) * 1.5 if unit == "tokens" else 1) / total)
    assert prepared.stats["train"]["samples"] == mixture["samples"]
    assert prepared.stats["validation"]["samples"] == len(validation)  # the validation split is not mixed
    # By rows the long source (36 of 216 training rows) must give 3/4 of them: repeated 4.5 times. By tokens it
    # already holds 4/5 of them, more than its 3/4: sub-sampled, and the short source repeated.
    passes = {name: entry["passes"] for name, entry in mixture["sources"].items()}
    assert passes["long"] > 1 > passes["short"] if unit == "rows" else passes["short"] > 1 > passes["long"]

    again = prepare(train, validation, stats["mixture"], tmp_path)
    assert again.cache_hit and again.stats["mixture"] == mixture
    other = prepare(train, validation, {**stats["mixture"], "weights": {"short": 1.0, "long": 1.0}}, tmp_path)
    assert not other.cache_hit and other.stats["cache_key"] != prepared.stats["cache_key"]
    unmixed = prepare(train, validation, None, tmp_path)
    assert "mixture" not in unmixed.stats and unmixed.stats["train"]["samples"] == len(train)


async def test_mixing_is_deterministic_by_seed(tmp_path, make_context):
    short = write_jsonl(tmp_path / "short.jsonl", qa_rows("s", 60))
    long = write_jsonl(tmp_path / "long.jsonl", qa_rows("l", 20, answer_words=20))
    sources = [{"path": str(short)}, {"path": str(long)}]

    async def trained_rows(seed):
        train, validation, stats = await load(make_context, sources=sources, seed=seed)
        prepared = prepare(train, validation, stats["mixture"], tmp_path, packing=False)
        from plugins.data.tokenized import load_tokenized

        rows = load_tokenized(prepared.tokenized["train"])
        return [rows[i]["input_ids"] for i in range(len(rows))]

    first = await trained_rows(3)
    assert await trained_rows(3) == first
    assert await trained_rows(4) != first


@needs_shared
@pytest.mark.parametrize("unit", ["rows", "tokens"])
async def test_mixing_alpaca_and_glaive_reaches_the_target_shares(tmp_path, make_context, unit):
    train, validation, stats = await load(
        make_context,
        sources=[{"path": str(ALPACA), "weight": 1}, {"path": str(GLAIVE), "weight": 1}],
        mix_by=unit,
        seed=0,
    )
    prepared = prepare(train, validation, stats["mixture"], tmp_path, max_seq_length=1024)
    mixture = prepared.stats["mixture"]
    # Within 1% of the target: one glaive sample holds about 0.2% of the trained tokens of the mixture.
    check_shares(mixture, unit, 0.01)
    alpaca, glaive = mixture["sources"]["alpaca_en_demo"], mixture["sources"]["glaive_toolcall_en_demo"]
    # glaive has 270 of the 1170 training rows and about a third of the trained tokens: repeated either way
    assert glaive["passes"] > 1 > alpaca["passes"]
    assert prepared.stats["validation"]["conversations"] == stats["validation_rows"] == 100 + 30


async def test_preference_pairs_mix_by_source_too(tmp_path, make_context):
    pairs = REPO / "data" / "preference"
    train, validation, stats = await load(
        make_context,
        sources=[
            {"path": str(pairs / "train.jsonl"), "name": "big", "weight": 1},
            {"path": str(pairs / "validation.jsonl"), "name": "small", "weight": 1},
        ],
        mix_by="rows",
        validation_split=0.0,
    )
    prepared = prepare(train, validation, stats["mixture"], tmp_path)
    mixture = prepared.stats["mixture"]
    assert prepared.stats["task"] == "preference"
    assert mixture["sources"]["small"]["rows"] == mixture["sources"]["big"]["rows"] == 30  # half of 60 pairs each
    assert prepared.stats["train"]["samples"] == 60


async def test_sources_with_a_validation_path_train_on_all_their_rows(tmp_path, make_context):
    one = write_jsonl(tmp_path / "one.jsonl", qa_rows("one", 8))
    two = write_jsonl(tmp_path / "two.jsonl", qa_rows("two", 4))
    held_out = write_jsonl(tmp_path / "eval.jsonl", qa_rows("eval", 3))
    train, validation, stats = await load(
        make_context, sources=[{"path": str(one)}, {"path": str(two)}], validation_path=str(held_out)
    )
    assert len(train) == 12 and len(validation) == 3
    assert [stats["sources"][name]["validation_rows"] for name in ("one", "two")] == [0, 0]
    assert "name" not in validation[0]["source"]  # the validation file is no source of the mixture


def test_an_unknown_key_in_a_source_is_matched_against_the_keys_of_a_source(tmp_path):
    from helpers.workflows import write_yaml

    from entity_training import ConfigError
    from entity_training.workflow import load_workflow

    path = write_yaml(
        tmp_path,
        """
        workflow:
          INPUT:
            - plugin: dataset_loader
              config:
                sources:
                  - {path: a.jsonl, wieght: 2}
                  - {path: b.jsonl, shuffle: false}
        """,
    )
    with pytest.raises(ConfigError) as raised:
        load_workflow(path)
    message = str(raised.value)
    assert (
        "wf.yaml:6 (workflow.INPUT[0].config.sources[0].wieght): unknown key 'wieght'; did you mean 'weight'?"
        in message
    )
    assert (
        "sources[1].shuffle): unknown key 'shuffle'; valid keys: field_map, format, max_samples, name, path, weight"
        in message
    )
