"""The typed description of a training stream: what INPUT hands over instead of split files.

INPUT (``dataset_loader`` with ``streaming: true``) checks the head of every file and writes a
``StreamSpec`` under ``dataset.stream``; THINK adds the tokenization settings to
``dataset.tokenized["stream"]``; DO reads the rows from the files themselves, one line at a time
(``plugins.data.stream_reader``), and packs them (``plugins.data.streaming``).

Each file records its size and modification time at INPUT: a file that changes later (before
training, or between a kill and ``--resume``) would give another stream, so DO refuses it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from entity_training import InputError, Problem

STREAM_SUFFIXES = (".jsonl", ".ndjson")


class StreamFile(BaseModel):
    """One JSON Lines file of a source, with the format detected from its first rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="The file, absolute.")
    format: str = Field(description="Its row format (alpaca, sharegpt, openai, prompt_completion, text).")
    reason: str = Field(description="Why that format: set by dataset_format, or the keys of a first row.")
    bytes: int = Field(ge=0, description="Size at INPUT.")
    mtime_ns: int = Field(description="Modification time at INPUT.")


class StreamSource(BaseModel):
    """The files of one source, read in order and cycled; where its training rows start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="The source's name (rows and trained tokens are counted by it).")
    files: tuple[StreamFile, ...] = Field(min_length=1, description="Its files, read one after the other.")
    field_map: dict[str, str] = Field(default_factory=dict, description="Column renames applied to every row.")
    weight: float = Field(1.0, ge=0, description="Its share of the mixture (relative to the other sources').")
    max_rows: int | None = Field(None, gt=0, description="Cycle over only the first this many valid rows.")
    start_file: int = Field(0, ge=0, description="The file where training rows start (after held-out rows).")
    start_offset: int = Field(0, ge=0, description="Byte offset in that file where training rows start.")
    start_line: int = Field(0, ge=0, description="Lines of that file before start_offset.")


class StreamSpec(BaseModel):
    """Everything DO needs to read the training rows, besides the tokenization settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: tuple[StreamSource, ...] = Field(min_length=1, description="The sources, mixed by weight.")
    mix_by: Literal["tokens", "rows"] = Field("tokens", description="What the weights share out.")
    seed: int = Field(ge=0, description="Seed of the shuffle buffer.")
    shuffle_buffer: int = Field(ge=1, description="Samples held to shuffle from (1: the files' order).")
    on_bad_rows: Literal["error", "skip"] = Field(description="A bad row stops the run or is skipped and counted.")


def stream_file(path: Path, fmt: str, reason: str) -> StreamFile:
    stat = path.stat()
    return StreamFile(
        path=str(path.resolve()), format=fmt, reason=reason, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns
    )


def check_streamable(path: Path | object) -> None:
    """Streaming reads local JSON Lines files (one row a line, so a row's position is a byte offset)."""
    if not isinstance(path, Path):  # a Hub dataset (plugins.data.hub.HubDataset)
        raise InputError(
            Problem(
                f"streaming reads local JSON Lines files; {path} is a Hub dataset. Download it and convert it to "
                ".jsonl, or set streaming: false (the datasets cache then holds it).",
                file=str(path),
            )
        )
    if path.is_file() and path.suffix.lower() in STREAM_SUFFIXES:
        return
    kind = "a save_to_disk folder" if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"
    raise InputError(
        Problem(
            f"streaming reads JSON Lines files ({', '.join(STREAM_SUFFIXES)}), one row a line; this is {kind}. "
            "Convert it to .jsonl (data/prepare_dataset.py writes JSON Lines), or set streaming: false.",
            file=str(path),
        )
    )


def check_unchanged(spec: StreamSpec) -> None:
    """Raise InputError when a file of the stream changed since INPUT described it."""
    for source in spec.sources:
        for file in source.files:
            try:
                stat = os.stat(file.path)
            except OSError as exc:
                raise InputError(
                    Problem(f"the streamed file cannot be read ({exc}); restore it or run again.", file=file.path)
                ) from None
            if (stat.st_size, stat.st_mtime_ns) != (file.bytes, file.mtime_ns):
                raise InputError(
                    Problem(
                        "the streamed file changed since the run read its head (size or modification time), so the "
                        "stream would differ from the one planned. Restore the file, or start the run again without "
                        "--resume.",
                        file=file.path,
                    )
                )
