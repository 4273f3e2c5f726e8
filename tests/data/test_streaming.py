"""Streaming (plugins/data/stream_*.py, streaming.py): rows read, validated, tokenized, shuffled and
packed one at a time, with a state that resumes exactly, and the loader's ``streaming: true``."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import partial
from itertools import accumulate
from pathlib import Path

import pytest
from helpers.cli import REPO, run_train
from helpers.data_tokenizer import build_tokenizer

from entity_training import InputError, Stage
from plugins import memory_keys
from plugins.data.conversation_files import read_conversations
from plugins.data.dataset import load_conversations
from plugins.data.encoding import backend_tokenizer, encode_conversations, encode_one
from plugins.data.stream_input import open_source
from plugins.data.stream_spec import StreamSpec, check_unchanged
from plugins.data.stream_state import read_stream_state, write_stream_state
from plugins.data.streaming import OPEN_ROWS, PackedStream
from plugins.data.templates import CHATML, TemplateRenderer
from plugins.dataset_loader import DatasetLoaderPlugin

MAX_LEN = 96
ROWS = 60


def _conversation_rows(count: int, seed: int = 0) -> list[dict]:
    """OpenAI-style rows of one to three turns and varied lengths."""
    rng = random.Random(seed)
    words = "the sea waves roll in and out quick brown fox capital of France is Paris".split()
    rows = []
    for n in range(count):
        messages = []
        for turn in range(rng.randint(1, 3)):
            messages.append(
                {"role": "user", "content": f"Q{n}.{turn} " + " ".join(rng.choices(words, k=rng.randint(1, 8)))}
            )
            messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(1, 12)))})
        rows.append({"messages": messages})
    return rows


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data_file(tmp_path) -> Path:
    return _write(tmp_path / "chat.jsonl", _conversation_rows(ROWS))


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _spec(path: Path, *, shuffle_buffer: int = 8, seed: int = 3, on_bad_rows: str = "error", **source) -> StreamSpec:
    opened = open_source(
        "chat",
        [str(path)],
        dataset_format="auto",
        field_map={},
        max_rows=source.get("max_rows"),
        validation_rows=source.get("validation_rows", 0),
        on_bad_rows=on_bad_rows,
    )
    return StreamSpec(sources=(opened.source,), seed=seed, shuffle_buffer=shuffle_buffer, on_bad_rows=on_bad_rows)


def _stream(spec: StreamSpec, tokenizer, *, packing: bool = True) -> PackedStream:
    encode = partial(
        encode_one,
        backend=backend_tokenizer(tokenizer),
        renderer=TemplateRenderer(CHATML, tokenizer),
        train_on="assistant",
        max_seq_length=MAX_LEN,
        truncation="right",
    )
    return PackedStream(spec, encode, max_seq_length=MAX_LEN, packing=packing)


def _take(stream: PackedStream, count: int) -> list[dict]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def _samples(rows: list[dict]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    found = []
    for row in rows:
        start = 0
        for length in row["seq_lengths"]:
            ids, labels = row["input_ids"][start : start + length], row["labels"][start : start + length]
            found.append((tuple(ids.tolist()), tuple(labels.tolist())))
            start += length
    return found


def _encoded_file(path: Path, tokenizer) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """What the non-streaming path makes of the same file: every sample, as the loader and THINK encode it."""
    encoded = encode_conversations(
        load_conversations([path]).conversations,
        tokenizer,
        TemplateRenderer(CHATML, tokenizer),
        train_on="assistant",
        max_seq_length=MAX_LEN,
        truncation="right",
    )
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    return [(tuple(ids.tolist()), tuple(labels.tolist())) for ids, labels in pairs]


def test_the_stream_gives_every_row_of_each_pass_as_the_loader_encodes_it(data_file, tokenizer):
    expected = Counter(_encoded_file(data_file, tokenizer))
    stream = _stream(_spec(data_file), tokenizer)
    rows = []
    for row in stream:
        rows.append(row)
        if stream.counts["samples"] >= 3 * ROWS:
            break
    seen = Counter(_samples(rows))
    assert set(seen) == set(expected)  # nothing invented, nothing lost
    # Three passes were read; what is still in the buffer or an open row has come out twice so far.
    assert all(2 * expected[s] <= seen[s] <= 3 * expected[s] for s in expected)
    assert stream.statistics()["sources"]["chat"]["passes_started"] == 3


def test_packed_rows_fit_and_every_sample_keeps_its_own_positions(data_file, tokenizer):
    rows = _take(_stream(_spec(data_file), tokenizer), 40)
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lengths"]) <= MAX_LEN
        starts = [0, *accumulate(row["seq_lengths"][:-1])]
        assert [int(row["position_ids"][s]) for s in starts] == [0] * len(starts)
    filled = sum(len(r["input_ids"]) for r in rows) / (len(rows) * MAX_LEN)
    assert filled > 0.8, filled


def test_the_shuffle_is_seeded_and_a_buffer_of_one_keeps_the_file_order(data_file, tokenizer):
    first = _samples(_take(_stream(_spec(data_file, seed=3), tokenizer, packing=False), 30))
    assert first == _samples(_take(_stream(_spec(data_file, seed=3), tokenizer, packing=False), 30))
    assert first != _samples(_take(_stream(_spec(data_file, seed=4), tokenizer, packing=False), 30))
    in_order = _samples(_take(_stream(_spec(data_file, shuffle_buffer=1), tokenizer, packing=False), 30))
    assert in_order == _encoded_file(data_file, tokenizer)[:30]


def test_a_saved_state_continues_with_the_same_rows(data_file, tokenizer, tmp_path):
    spec = _spec(data_file, shuffle_buffer=16, max_rows=25)  # several passes of 25 rows within 120 rows
    straight = _stream(spec, tokenizer)
    rows = _take(straight, 120)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    write_stream_state(folder, straight.state_at(70), spec)

    resumed = _stream(spec, tokenizer)
    resumed.load_state_dict(read_stream_state(folder, spec))
    assert resumed.rows_yielded == 70
    again = _take(resumed, 50)
    assert [_samples([r]) for r in again] == [_samples([r]) for r in rows[70:]]
    assert resumed.statistics() == straight.statistics()


def test_memory_holds_the_buffer_and_open_rows_only(data_file, tokenizer):
    stream = _stream(_spec(data_file, shuffle_buffer=10), tokenizer)
    for number, _ in enumerate(stream):
        assert len(stream.buffer) <= 10 and len(stream.open_rows) <= OPEN_ROWS and len(stream.ready) <= 1
        if number == 200:
            break


def test_a_bad_row_stops_with_its_line_or_is_skipped_and_counted(tmp_path, tokenizer):
    rows = _conversation_rows(12)
    rows[8] = {"messages": [{"role": "user", "content": "no answer"}]}
    rows[10] = "{not json"
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError) as caught:
        _take(_stream(_spec(path), tokenizer), 30)
    assert f"{path.resolve()}:9" in str(caught.value) and "no assistant turn" in str(caught.value)

    stream = _stream(_spec(path, on_bad_rows="skip"), tokenizer)
    for _ in stream:
        if stream.counts["samples"] >= 30:
            break
    assert stream.statistics()["sources"]["chat"]["bad_rows"] == 2 * stream.cursors[0].state.epoch + 2


def test_a_changed_file_or_another_streams_state_is_refused(data_file, tokenizer, tmp_path):
    spec = _spec(data_file)
    stream = _stream(spec, tokenizer)
    _take(stream, 5)
    write_stream_state(tmp_path, stream.state_at(5), spec)
    with pytest.raises(InputError, match="streamed other data"):
        read_stream_state(tmp_path, spec.model_copy(update={"seed": 4}))
    with data_file.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(_conversation_rows(1)[0]) + "\n")
    with pytest.raises(InputError, match="changed since the run read its head"):
        check_unchanged(spec)


async def test_the_loader_describes_the_stream_and_holds_out_the_head_for_validation(data_file, make_context):
    context = make_context(Stage.INPUT)
    summary = await DatasetLoaderPlugin(
        {"dataset_path": str(data_file), "streaming": True, "validation_rows": 5, "shuffle_buffer": 50, "seed": 9}
    ).execute(context)
    spec = context.recall(memory_keys.DATASET_STREAM)
    source = spec.sources[0]
    assert (source.start_file, source.start_line) == (0, 5) and spec.shuffle_buffer == 50 and spec.seed == 9
    assert source.files[0].format == "openai" and source.files[0].bytes == data_file.stat().st_size
    validation = read_conversations(context.recall(memory_keys.DATASET_VALIDATION))
    head = read_conversations(context.recall(memory_keys.DATASET_TRAIN))
    assert [c["source"]["line"] for c in validation] == [1, 2, 3, 4, 5]
    assert [c["source"]["line"] for c in head] == list(range(6, ROWS + 1))  # the head: the rest of this small file
    stats = context.recall(memory_keys.DATASET_STATS)
    assert stats["streaming"] and stats["validation_rows"] == 5 and stats["train_rows"] is None
    assert "5 validation rows" in summary


@pytest.mark.slow
def test_the_example_workflow_streams_on_the_tiny_model(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(
        "--config", str(REPO / "configs" / "streaming.yaml"), "--model", "tiny", "--max-steps", "3",
        "--set", "training_config.save_steps=2", "--set", "training_config.evaluation_steps=3",
        "--output", str(run_dir), "--yes", cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((run_dir / "memory.json").read_text(encoding="utf-8"))["entries"]["training.result"]
    assert result["steps"] == 3 and result["final_eval_loss"] is not None
    assert result["stream"]["samples"] > 0 and result["stream"]["sources"]["train"]["bad_rows"] == 0
    assert (run_dir / "checkpoints" / "checkpoint-2" / "stream_state.json").is_file()
    assert [json.loads(line)["step"] for line in (run_dir / "batches.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (run_dir / "export" / "huggingface").is_dir()


def test_two_sources_mix_by_their_weights_and_resume_exactly(tmp_path, tokenizer):
    pytest.importorskip("plugins.data.mixture", reason="plugins/data/mixture.py (the mixture scheduler) is absent")
    files = {
        "short": _write(tmp_path / "short.jsonl", _conversation_rows(40, seed=1)),
        "long": _write(tmp_path / "long.jsonl", _conversation_rows(30, seed=2)),
    }
    weights = {"short": 3.0, "long": 1.0}
    sources = tuple(
        _spec(path).sources[0].model_copy(update={"name": name, "weight": weights[name]})
        for name, path in files.items()
    )
    spec = StreamSpec(sources=sources, mix_by="rows", seed=5, shuffle_buffer=8, on_bad_rows="error")
    straight = _stream(spec, tokenizer)
    rows = _take(straight, 90)
    realised = straight.statistics()["mixture"]
    assert realised["short"]["share_rows"] == pytest.approx(0.75, abs=0.02)
    assert realised["long"]["share_rows"] == pytest.approx(0.25, abs=0.02)

    write_stream_state(tmp_path, straight.state_at(40), spec)
    resumed = _stream(spec, tokenizer)
    resumed.load_state_dict(read_stream_state(tmp_path, spec))
    assert [_samples([r]) for r in _take(resumed, 50)] == [_samples([r]) for r in rows[40:]]
    assert resumed.statistics() == straight.statistics()


async def test_streamed_sources_keep_their_own_format_weight_and_validation_rows(tmp_path, make_context):
    chat = _write(tmp_path / "chat.jsonl", _conversation_rows(20))
    alpaca = _write(tmp_path / "qa.jsonl", [{"q": f"Q{i}?", "a": f"A{i}."} for i in range(20)])
    context = make_context(Stage.INPUT)
    await DatasetLoaderPlugin(
        {
            "sources": [
                {"path": str(chat), "weight": 3},
                {"path": str(alpaca), "name": "qa", "weight": 1, "max_samples": 5,
                 "field_map": {"q": "instruction", "a": "output"}},
            ],
            "mix_by": "rows",
            "streaming": True,
            "validation_rows": 2,
        }
    ).execute(context)  # fmt: skip
    spec = context.recall(memory_keys.DATASET_STREAM)
    assert [(s.name, s.weight, s.max_rows, s.files[0].format) for s in spec.sources] == [
        ("chat", 3.0, None, "openai"),
        ("qa", 1.0, 5, "alpaca"),
    ]
    assert spec.mix_by == "rows" and [s.start_line for s in spec.sources] == [2, 2]
    validation = read_conversations(context.recall(memory_keys.DATASET_VALIDATION))
    assert [(Path(c["source"]["file"]).name, c["source"]["line"]) for c in validation] == [
        ("chat.jsonl", 1), ("chat.jsonl", 2), ("qa.jsonl", 1), ("qa.jsonl", 2),
    ]  # fmt: skip
    assert validation[2]["messages"][-1]["content"] == "A0."
