"""INPUT with ``streaming: true``: check the head of each source and describe the stream, reading no more.

Per file: the format (given, or detected from its first rows). Per source: the first
``validation_rows`` valid rows are held out for validation (the stream starts after them), and
the next ``HEAD_ROWS`` are read and validated now, so a wrong format or a bad first row stops the
run at load instead of during training; they are also the sample later stages show and measure
(``dataset.train`` holds them). The rest of each file is read by DO, one line at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entity_training import InputError, Problem
from plugins.data.dataset import FileReport
from plugins.data.preference_formats import task_of_format
from plugins.data.readers import expand_paths
from plugins.data.sources import DataSource
from plugins.data.stream_reader import detect_file_format, head_of
from plugins.data.stream_spec import StreamSource, StreamSpec, check_streamable, stream_file

# Rows of each source read and validated at INPUT (after the held-out ones).
HEAD_ROWS = 64


@dataclass
class OpenedSource:
    source: StreamSource
    head: list[dict[str, Any]]  # the first training rows, validated
    validation: list[dict[str, Any]]  # the held-out rows before them
    files: list[FileReport]


@dataclass
class OpenedStream:
    spec: StreamSpec
    head: list[dict[str, Any]]  # every source's head rows
    validation: list[dict[str, Any]]  # every source's held-out rows
    files: list[FileReport]


def open_stream(
    sources: list[DataSource],
    *,
    mix_by: str,
    seed: int,
    shuffle_buffer: int,
    validation_rows: int,
    on_bad_rows: str,
) -> OpenedStream:
    """Open every source (its files, format, head and held-out rows) and describe the stream of them all."""
    opened = [
        open_source(
            source.label,
            source.paths,
            dataset_format=source.format,
            field_map=source.field_map,
            weight=source.weight,
            max_rows=source.max_samples,
            validation_rows=validation_rows,
            on_bad_rows=on_bad_rows,
        )
        for source in sources
    ]
    spec = StreamSpec(
        sources=tuple(o.source for o in opened),
        mix_by=mix_by,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        on_bad_rows=on_bad_rows,
    )
    return OpenedStream(
        spec,
        head=[row for o in opened for row in o.head],
        validation=[row for o in opened for row in o.validation],
        files=[report for o in opened for report in o.files],
    )


def open_source(
    name: str,
    paths: list[str],
    *,
    dataset_format: str,
    field_map: dict[str, str],
    weight: float = 1.0,
    max_rows: int | None,
    validation_rows: int,
    on_bad_rows: str,
) -> OpenedSource:
    """Describe one source's files and read its head; InputError for a file streaming cannot read."""
    files = []
    for path in expand_paths(paths):
        check_streamable(path)
        fmt, reason = (
            (dataset_format, "set by dataset_format")
            if dataset_format not in ("auto", "json")
            else detect_file_format(path, field_map)
        )
        if task_of_format(fmt) != "sft":
            raise InputError(
                Problem(
                    f"the file holds {fmt} rows (preference data); streaming trains supervised fine-tuning data "
                    "only. Set streaming: false for preference training.",
                    file=str(path),
                )
            )
        files.append(stream_file(path, fmt, reason))
    source = StreamSource(name=name, files=tuple(files), field_map=field_map, weight=weight, max_rows=max_rows)
    validation, after = head_of(source, validation_rows, on_bad_rows=on_bad_rows)
    if validation_rows and after.file >= len(files):
        raise InputError(
            Problem(
                f"validation_rows is {validation_rows}, but the source {name!r} has only {len(validation)} valid "
                "rows: none would be left to train on. Lower validation_rows, or give validation_path."
            )
        )
    source = source.model_copy(
        update={"start_file": after.file, "start_offset": after.offset, "start_line": after.line}
    )
    head, _ = head_of(source, HEAD_ROWS, on_bad_rows=on_bad_rows)
    if not head:
        raise InputError(
            Problem(f"the source {name!r} has no valid row in its files: {', '.join(f.path for f in files)}.")
        )
    return OpenedSource(source, head, validation, _reports(files, head + validation))


def _reports(files, conversations: list[dict[str, Any]]) -> list[FileReport]:
    """What INPUT read of each file: the head rows only (``rows`` counts them, not the file)."""
    counts: dict[str, int] = {}
    for conversation in conversations:
        counts[conversation["source"]["file"]] = counts.get(conversation["source"]["file"], 0) + 1
    return [FileReport(path=f.path, format=f.format, reason=f.reason, rows=counts.get(f.path, 0)) for f in files]


def total_bytes(sources: list[StreamSource]) -> int:
    return sum(file.bytes for source in sources for file in source.files)
