"""Read the conversations of a streamed source one line at a time, from a position that can be saved.

A ``SourceCursor`` holds one open file and a position (file, byte offset, line, pass); reading a
row validates and normalises it as the loader does (``plugins.data.formats``), so a bad row is
reported with its file and line, or skipped and counted. At the end of the last file the source
starts its next pass where its training rows start (``start_file``, ``start_offset``). Memory does not grow with the file: one line at a
time is read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from entity_training import InputError, Problem
from plugins.data.dataset import explain_bad_row
from plugins.data.formats import BadRow, apply_field_map
from plugins.data.preference_formats import detect_row_format, normalise_any_row
from plugins.data.readers import TOO_DEEP
from plugins.data.stream_spec import StreamSource

# Rows read from the start of each file to detect its format (as the loader's first-row rule does).
DETECTION_ROWS = 32


@dataclass
class CursorState:
    """Where a source is: the file, the byte offset and line in it, the pass, and what was read."""

    file: int
    offset: int
    line: int
    epoch: int = 0
    rows: int = 0  # valid rows read in this pass
    bad_rows: int = 0  # rows skipped (on_bad_rows: skip), over all passes


def conversation_of_line(raw: bytes, *, fmt: str, field_map: dict[str, str], file: str, line: int) -> dict[str, Any]:
    """One JSON Lines row as a normalised conversation with its ``source``; BadRow says why it is not one."""
    try:
        value = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BadRow(f"the line is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRow(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BadRow(TOO_DEEP) from None
    value = apply_field_map(value, field_map)
    try:
        conversation = normalise_any_row(value, fmt)
    except BadRow as exc:
        raise BadRow(explain_bad_row(exc, value, fmt)) from None
    conversation["source"] = {"file": file, "line": line}
    return conversation


def detect_file_format(path: Path, field_map: dict[str, str]) -> tuple[str, str]:
    """``(format, why)`` from the first row of ``path``'s first rows whose keys name a format.

    Raises InputError naming the file when none of them does.
    """
    first_problem = None
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number > DETECTION_ROWS:
                break
            if not raw.strip():
                continue
            try:
                fmt, why = detect_row_format(apply_field_map(json.loads(raw), field_map))
            except (BadRow, ValueError, RecursionError) as exc:
                first_problem = first_problem or f"line {number}: {exc}"
                continue
            return fmt, f"{why} in {path}:{number}"
    raise InputError(
        Problem(
            f"cannot tell the format of the file from its first {DETECTION_ROWS} rows "
            f"({first_problem or 'the file has no rows'}). Set dataset_format, or rename columns with field_map.",
            file=str(path),
        )
    )


class SourceCursor:
    """The next valid conversation of one source, forever (passes restart at ``start_offset``)."""

    def __init__(self, source: StreamSource, *, on_bad_rows: str, state: CursorState | None = None, cycle: bool = True):
        self.source = source
        self.cycle = cycle  # False: None at the end of the first pass
        self.on_bad_rows = on_bad_rows
        self.state = state or CursorState(file=source.start_file, offset=source.start_offset, line=source.start_line)
        self._handle: BinaryIO | None = None

    def state_dict(self) -> dict[str, int]:
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.close()
        self.state = CursorState(**state)

    def next_conversation(self) -> dict[str, Any] | None:
        while True:
            state = self.state
            if state.file >= len(self.source.files) or (
                self.source.max_rows is not None and state.rows >= self.source.max_rows
            ):
                if not self.cycle:
                    return None
                self._next_pass()
                continue
            raw = self._open().readline()
            if not raw:
                self.close()
                state.file, state.offset, state.line = state.file + 1, 0, 0
                continue
            state.offset += len(raw)
            state.line += 1
            if not raw.strip():
                continue
            file = self.source.files[state.file]
            try:
                conversation = conversation_of_line(
                    raw, fmt=file.format, field_map=self.source.field_map, file=file.path, line=state.line
                )
            except BadRow as exc:
                if self.on_bad_rows == "error":
                    raise InputError(
                        Problem(str(exc), file=file.path, line=state.line),
                        title="a streamed row does not fit its format; fix it, or set on_bad_rows: skip to drop it",
                    ) from None
                state.bad_rows += 1
                continue
            state.rows += 1
            return conversation

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> BinaryIO:
        if self._handle is None:
            self._handle = open(self.source.files[self.state.file].path, "rb")  # noqa: SIM115 (kept open across rows)
            self._handle.seek(self.state.offset)
        return self._handle

    def _next_pass(self) -> None:
        if self.state.rows == 0:
            files = ", ".join(f.path for f in self.source.files)
            raise InputError(
                Problem(
                    f"the source {self.source.name!r} has no valid row to train on (every row was skipped as bad). "
                    f"Files: {files}. Fix the rows, or remove the source."
                )
            )
        self.close()
        self.state = CursorState(
            file=self.source.start_file,
            offset=self.source.start_offset,
            line=self.source.start_line,
            epoch=self.state.epoch + 1,
            bad_rows=self.state.bad_rows,
        )


def head_of(source: StreamSource, rows: int, *, on_bad_rows: str) -> tuple[list[dict[str, Any]], CursorState]:
    """The first ``rows`` valid conversations of a source, in one pass (fewer when it has fewer), and
    the position after them."""
    cursor = SourceCursor(source, on_bad_rows=on_bad_rows, cycle=False)
    found: list[dict[str, Any]] = []
    try:
        while len(found) < rows and (conversation := cursor.next_conversation()) is not None:
            found.append(conversation)
    finally:
        cursor.close()
    return found, cursor.state
