"""Load dataset files into conversations, and the operations on them: statistics and split.

Used by the DatasetLoader plugin and by ``data/prepare_dataset.py``: one implementation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from entity_training import InputError, Problem
from plugins.data import load_cache
from plugins.data.formats import BadRow, apply_field_map
from plugins.data.hub import HubDataset
from plugins.data.preference_formats import (
    detect_row_format,
    missing_keys_of,
    normalise_any_row,
    task_of_conversation,
    task_of_format,
)
from plugins.data.readers import RawRow, TextUnit, expand_paths, read_rows

BadRowPolicy = Literal["error", "skip"]
MAX_REPORTED_BAD_ROWS = 10


@dataclass(frozen=True)
class RowProblem:
    where: str
    file: str
    line: int | None
    reason: str

    def as_problem(self) -> Problem:
        if self.line is None:
            return Problem(f"{self.where.removeprefix(self.file).strip()}: {self.reason}", file=self.file)
        return Problem(self.reason, file=self.file, line=self.line)


@dataclass
class FileReport:
    """What was read from one file: its format, why, and how many rows were kept or rejected."""

    path: str
    format: str
    reason: str
    rows: int = 0
    bad_rows: int = 0


@dataclass
class ConversationDataset:
    """Normalised conversations plus what the loading found out about them."""

    conversations: list[dict[str, Any]]
    files: list[FileReport] = field(default_factory=list)
    bad_rows: list[RowProblem] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # parse-cache keys removed to keep that cache bounded

    def __len__(self) -> int:
        return len(self.conversations)

    @property
    def task(self) -> str:
        """sft, preference or unpaired: one per dataset (``load_conversations`` refuses a mix)."""
        tasks = {task_of_format(f.format) for f in self.files if f.format}
        if not tasks and self.conversations:
            tasks = {task_of_conversation(self.conversations[0])}
        return next(iter(tasks), "sft")

    def statistics(self) -> dict[str, Any]:
        return conversation_statistics(self.conversations, self.files, len(self.bad_rows))

    def split(self, validation_split: float, *, seed: int, shuffle: bool = True) -> tuple[list[dict], list[dict]]:
        return split_conversations(self.conversations, validation_split, seed=seed, shuffle=shuffle)


def load_conversations(
    paths: list[str | Path],
    *,
    dataset_format: str = "auto",
    field_map: Mapping[str, str] | None = None,
    on_bad_rows: BadRowPolicy = "error",
    text_unit: TextUnit = "file",
    cache_dir: Path | None = None,
    max_cached: int | None = None,
    key: str = "dataset_path",
) -> ConversationDataset:
    """Read, detect, normalise and validate every row of ``paths``.

    With ``cache_dir``, the result for unchanged files (same bytes) and the same settings is
    reused from a previous load instead of being parsed again; after storing a new result, only
    the ``max_cached`` most recently used ones are kept (None: all). Hub datasets are not kept
    there: ``datasets`` caches them itself. ``key`` is the setting the path errors name.

    Raises InputError for unreadable files, and for bad rows when ``on_bad_rows`` is ``error``
    (listing the first offenders with file, line and reason), or when no row is left.
    """
    files = expand_paths(paths, key=key)
    if any(isinstance(file, HubDataset) for file in files):
        cache_dir = None
    settings = {
        "format": dataset_format,
        "field_map": dict(field_map or {}),
        "on_bad_rows": on_bad_rows,
        "text_unit": text_unit,
    }
    key = load_cache.key_for(files, settings, cache_dir) if cache_dir is not None else None
    cached = load_cache.read(cache_dir, key, ("conversations", "files", "bad_rows")) if key else None
    if cached is not None:
        load_cache.mark_used(cache_dir, key)
        return ConversationDataset(
            cached["conversations"],
            [FileReport(**f) for f in cached["files"]],
            [RowProblem(**b) for b in cached["bad_rows"]],
        )
    dataset = _parse(files, dataset_format, field_map or {}, text_unit)
    check_one_task(dataset.files)
    _enforce_policy(dataset, on_bad_rows)
    # A file that changed while it was parsed may not match the key computed before: cache nothing then.
    if key and load_cache.key_for(files, settings, cache_dir) == key:
        dataset.pruned = load_cache.write(
            cache_dir,
            key,
            {
                "conversations": dataset.conversations,
                "files": [asdict(f) for f in dataset.files],
                "bad_rows": [asdict(b) for b in dataset.bad_rows],
            },
            keep=max_cached,
        )
    return dataset


def _parse(
    files: list[Path | HubDataset], dataset_format: str, field_map: Mapping[str, str], text_unit: TextUnit
) -> ConversationDataset:
    dataset = ConversationDataset(conversations=[])
    for path in files:
        rows = read_rows(path, text_unit=text_unit)
        mapped = [apply_field_map(row.value, field_map) for row in rows]
        fmt, reason = _file_format(rows, mapped, dataset_format)
        report = FileReport(path=str(path), format=fmt, reason=reason)
        for row, value in zip(rows, mapped, strict=True):
            try:
                if not fmt:
                    raise BadRow(reason)
                conversation = normalise_any_row(value, fmt)
            except BadRow as exc:
                report.bad_rows += 1
                dataset.bad_rows.append(RowProblem(row.where, row.file, row.line, explain_bad_row(exc, value, fmt)))
                continue
            conversation["source"] = row.source
            dataset.conversations.append(conversation)
            report.rows += 1
        dataset.files.append(report)
    return dataset


def _file_format(rows: list[RawRow], mapped: list[Any], dataset_format: str) -> tuple[str, str]:
    """The format of one file: given, or detected from its first row with a recognisable layout."""
    if dataset_format not in ("auto", "json"):
        return dataset_format, "set by dataset_format"
    first_problem = None
    for row, value in zip(rows, mapped, strict=True):
        try:
            fmt, why = detect_row_format(value)
        except BadRow as exc:
            first_problem = first_problem or str(exc)
            continue
        return fmt, f"{why} in {row.where}"
    return "", first_problem or "the file has no rows"


def explain_bad_row(exc: BadRow, value: Any, fmt: str) -> str:
    """The reason a row is bad, naming the keys its format needs when some are missing."""
    reason = str(exc)
    if fmt and isinstance(value, Mapping):
        missing = missing_keys_of(value, fmt)
        if missing:
            reason = f"missing the key(s) {', '.join(repr(k) for k in missing)} required by the {fmt} format"
    return reason


def _enforce_policy(dataset: ConversationDataset, on_bad_rows: BadRowPolicy) -> None:
    bad = dataset.bad_rows
    if bad and on_bad_rows == "error":
        problems = [b.as_problem() for b in bad[:MAX_REPORTED_BAD_ROWS]]
        more = f" ({len(bad) - MAX_REPORTED_BAD_ROWS} more not shown)" if len(bad) > MAX_REPORTED_BAD_ROWS else ""
        raise InputError(
            problems,
            title=f"{len(bad)} row(s) do not fit their format{more}; fix them, or set on_bad_rows: skip to drop them",
        )
    if not dataset.conversations:
        files = ", ".join(f.path for f in dataset.files)
        reason = f"all {len(bad)} rows were rejected (first: {bad[0].where}: {bad[0].reason})" if bad else "no rows"
        raise InputError(Problem(f"the dataset is empty after filtering: {reason}. Files read: {files}."))


def check_one_task(files: list[FileReport]) -> None:
    """Raise InputError when the files hold data of different tasks (SFT conversations, pairs, KTO rows)."""
    by_task: dict[str, list[str]] = {}
    for report in files:
        if report.format:
            by_task.setdefault(task_of_format(report.format), []).append(report.path)
    if len(by_task) > 1:
        listed = "; ".join(f"{task}: {', '.join(paths)}" for task, paths in sorted(by_task.items()))
        raise InputError(
            Problem(
                f"the dataset mixes tasks ({listed}); a run trains one task. Give these files to separate runs "
                "(or workflow steps)."
            )
        )


def check_kto_labels(dataset: ConversationDataset) -> None:
    """Unpaired (KTO) training data needs desirable and undesirable examples: raise InputError naming the files."""
    if dataset.task != "unpaired":
        return
    labels = {conversation["desirable"] for conversation in dataset.conversations}
    if len(labels) == 1:
        only = "desirable (label: true)" if labels == {True} else "undesirable (label: false)"
        files = ", ".join(f.path for f in dataset.files)
        raise InputError(
            Problem(
                f"every row is {only}: KTO needs both desirable and undesirable examples. Add rows with the other "
                "label.",
                file=files,
            )
        )


def split_conversations(
    conversations: list[dict[str, Any]], validation_split: float, *, seed: int, shuffle: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Reproducible train/validation split: same seed and data, same split.

    A non-zero split keeps at least one validation row and at least one training row.
    """
    if not 0 <= validation_split < 1:
        raise InputError(Problem(f"validation_split must be in [0, 1), got {validation_split}."))
    order = list(range(len(conversations)))
    if shuffle:
        random.Random(seed).shuffle(order)
    count = 0
    if validation_split > 0 and len(conversations) > 1:
        count = min(max(1, round(len(conversations) * validation_split)), len(conversations) - 1)
    return [conversations[i] for i in order[count:]], [conversations[i] for i in order[:count]]


def conversation_statistics(
    conversations: list[dict[str, Any]], files: list[FileReport] | None = None, bad_rows: int = 0
) -> dict[str, Any]:
    """Rows, task, turns, characters, roles, formats and per-file counts (JSON-serialisable).

    The turns of a preference row are its prompt turns and its answers (chosen and rejected, or the completion).
    """
    roles: Counter[str] = Counter()
    characters = 0
    tool_calls = 0
    for conversation in conversations:
        for message in _all_messages(conversation):
            roles[message["role"]] += 1
            characters += len(message["content"])
            tool_calls += len(message.get("tool_calls") or ())
    turns = sum(roles.values())
    files = files or []
    task = ConversationDataset(list(conversations[:1]), files).task
    unpaired = {"desirable": sum(1 for c in conversations if c["desirable"])} if task == "unpaired" else {}
    return {
        "rows": len(conversations),
        "task": task,
        **unpaired,
        "turns": turns,
        "turns_per_row": round(turns / len(conversations), 2) if conversations else 0.0,
        "characters": characters,
        "roles": dict(sorted(roles.items())),
        "tool_calls": tool_calls,
        "rows_with_tools": sum(1 for c in conversations if c.get("tools")),
        "detected_format": sorted({f.format for f in files if f.format}),
        "files": {f.path: {"format": f.format, "why": f.reason, "rows": f.rows, "bad_rows": f.bad_rows} for f in files},
        "bad_rows": bad_rows,
    }


def _all_messages(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    answers = ("chosen", "rejected", "completion")
    return conversation["messages"] + [m for key in answers for m in conversation.get(key, ())]
