"""Read dataset files into raw rows, each with where it came from (file and line, or row index).

JSON and JSON Lines are parsed here rather than through ``datasets`` so that an error can name
the exact line; Parquet, CSV and ``save_to_disk`` folders go through the ``datasets`` library, and
so do Hub datasets (``hf://owner/name[:config][@split]``, see ``plugins.data.hub``).
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from entity_training import InputError, Problem
from plugins.data.hub import HubDataset, is_hub_path, parse_hub_path, read_hub_rows

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".txt")
HF_FOLDER_MARKERS = ("dataset_dict.json", "state.json")
TextUnit = Literal["file", "paragraph"]


@dataclass(frozen=True)
class RawRow:
    """One row as read from disk, before format detection."""

    value: Any
    file: str
    line: int | None = None  # 1-based line in the file, when the format has lines
    index: int | None = None  # 0-based row number otherwise

    @property
    def source(self) -> dict[str, Any]:
        return (
            {"file": self.file, "line": self.line}
            if self.line is not None
            else {"file": self.file, "index": self.index}
        )

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file} (row {self.index})"


def problem_at(source: dict[str, Any] | None, message: str) -> Problem:
    """A Problem located at a conversation's ``source`` (file and line, or file and row index)."""
    source = source or {}
    if source.get("line") is None and source.get("index") is not None:
        message = f"row {source['index']}: {message}"
    return Problem(message, file=source.get("file"), line=source.get("line"))


GLOB_CHARACTERS = frozenset("*?[")


def expand_paths(paths: list[str | Path], *, key: str = "dataset_path") -> list[Path | HubDataset]:
    """Files and Hugging Face dataset folders named by ``paths``, and Hub datasets for ``hf://`` paths.

    Folders are searched recursively and glob patterns (``shards/*.parquet``, ``**``) expanded, both
    in sorted order, so that the same shards always come in the same order. ``key`` is the setting
    the errors name.
    """
    found: list[Path | HubDataset] = []
    for raw in paths:
        if is_hub_path(str(raw)):
            found.append(parse_hub_path(str(raw), key=key))
            continue
        path = Path(raw).expanduser()
        if not path.exists() and GLOB_CHARACTERS & set(str(raw)):
            found.extend(_expand_glob(path, key))
            continue
        if not path.exists():
            hint = _similar_names(path)
            raise InputError(Problem(f"the dataset path does not exist.{hint} Check {key}.", file=str(path)))
        if not path.is_file() and not path.is_dir():  # reading a FIFO waits forever, a device never ends
            raise InputError(
                Problem("is not a regular file or folder (a pipe or a device?); give a data file", file=str(path))
            )
        if path.is_file() or is_hf_dataset_folder(path):
            found.append(path)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES and not _hidden(p, path))
        if not files:
            raise InputError(
                Problem(
                    f"the folder holds no data files (looked for {', '.join(DATA_SUFFIXES)} and save_to_disk "
                    f"folders). Point {key} at a data file or a folder that contains some.",
                    file=str(path),
                )
            )
        found.extend(files)
    return found


def _expand_glob(pattern: Path, key: str) -> list[Path]:
    import glob

    matches = sorted(Path(m) for m in glob.glob(str(pattern), recursive=True))
    files = [m for m in matches if (m.is_file() and m.suffix in DATA_SUFFIXES) or is_hf_dataset_folder(m)]
    if not files:
        seen = f" (it matches {len(matches)} entries, none a data file)" if matches else ""
        raise InputError(
            Problem(
                f"the pattern matches no data file{seen}; looked for {', '.join(DATA_SUFFIXES)} and save_to_disk "
                f"folders. Check {key}.",
                file=str(pattern),
            )
        )
    return files


def is_hf_dataset_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in HF_FOLDER_MARKERS)


def read_rows(path: Path | HubDataset, *, text_unit: TextUnit = "file") -> list[RawRow]:
    """All rows of one file, dataset folder or Hub dataset. Raises InputError for unreadable or empty files."""
    if isinstance(path, HubDataset):
        return [RawRow(value, str(path), index=i) for i, value in enumerate(read_hub_rows(path))]
    if is_hf_dataset_folder(path):
        return _read_hf_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    elif suffix == ".txt":
        rows = _read_text(path, text_unit)
    elif suffix in (".parquet", ".csv"):
        rows = _read_with_datasets(path, suffix[1:])
    else:
        raise InputError(
            Problem(
                f"unsupported file type {suffix or '(none)'}; use one of {', '.join(DATA_SUFFIXES)}.", file=str(path)
            )
        )
    if not rows:
        raise InputError(Problem("the file holds no rows. Add data or remove it from dataset_path.", file=str(path)))
    return rows


# -- text-based formats -----------------------------------------------------------------------


def read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            Problem(
                f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}). "
                "Re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`.",
                file=str(path),
                line=line,
            )
        ) from None
    if not text.strip():
        raise InputError(Problem("the file is empty. Add data or remove it from dataset_path.", file=str(path)))
    return text.removeprefix("\ufeff")


TOO_DEEP = "arrays or objects nested too deeply to read (thousands of levels)"


def _read_jsonl(path: Path) -> list[RawRow]:
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(path, number, exc.colno, exc.msg) from None
        except RecursionError:
            raise _json_error(path, number, 1, TOO_DEEP) from None
        rows.append(RawRow(value, str(path), line=number))
    return rows


def _read_json(path: Path) -> list[RawRow]:
    text = read_utf8(path)
    start = _skip_space(text, 0)
    if text[start] != "[":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = " (one JSON object per line? then name the file .jsonl)" if exc.msg == "Extra data" else ""
            raise _json_error(path, exc.lineno, exc.colno, exc.msg + hint) from None
        except RecursionError:
            raise _json_error(path, 1, 1, TOO_DEEP) from None
        return _rows_of_document(path, document)
    return _scan_json_array(path, text, start)


def _scan_json_array(path: Path, text: str, start: int) -> list[RawRow]:
    """Decode a top-level array element by element so each row knows its line."""
    decoder = json.JSONDecoder()
    newlines = [m.start() for m in re.finditer("\n", text)]
    rows = []
    position = _skip_space(text, start + 1)
    while True:
        if position >= len(text):
            raise _json_error(path, len(newlines) + 1, 1, "the array is not closed with ']'")
        if text[position] == "]" and not rows:
            break
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            line = bisect.bisect_left(newlines, exc.pos) + 1
            raise _json_error(path, line, exc.pos - (newlines[line - 2] if line > 1 else -1), exc.msg) from None
        except RecursionError:
            raise _json_error(path, bisect.bisect_left(newlines, position) + 1, 1, TOO_DEEP) from None
        rows.append(RawRow(value, str(path), line=bisect.bisect_left(newlines, position) + 1))
        position = _skip_space(text, end)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
        elif position < len(text) and text[position] == "]":
            break
        else:
            line = bisect.bisect_left(newlines, position) + 1
            raise _json_error(path, line, 1, "expected ',' or ']' after an array element")
    trailing = _skip_space(text, position + 1)
    if trailing < len(text):
        raise _json_error(path, bisect.bisect_left(newlines, trailing) + 1, 1, "extra data after the top-level array")
    return rows


def _rows_of_document(path: Path, document: Any) -> list[RawRow]:
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return [RawRow(value, str(path), index=i) for i, value in enumerate(document["data"])]
    raise InputError(
        Problem(
            "a .json dataset must be an array of rows or an object with a 'data' array; "
            f"this one is a {type(document).__name__}. Use .jsonl for one row per line.",
            file=str(path),
        )
    )


def _read_text(path: Path, text_unit: TextUnit) -> list[RawRow]:
    text = read_utf8(path)
    if text_unit == "file":
        return [RawRow({"text": text}, str(path), line=1)]
    rows = []
    for match in re.finditer(r"\S(?:.*?)(?=\n[ \t]*\n|\Z)", text, flags=re.DOTALL):
        rows.append(RawRow({"text": match.group(0).rstrip()}, str(path), line=text.count("\n", 0, match.start()) + 1))
    return rows


# -- binary and folder formats (through `datasets`) --------------------------------------------


def _read_with_datasets(path: Path, kind: str) -> list[RawRow]:
    import datasets

    reader = datasets.Dataset.from_parquet if kind == "parquet" else datasets.Dataset.from_csv
    try:
        table = reader(str(path), keep_in_memory=True)
    except Exception as exc:  # the libraries raise many types for a bad file; all are bad input here
        raise InputError(Problem(f"cannot read the {kind} file: {_first_line(exc)}", file=str(path))) from exc
    # CSV rows are numbered from the line after the header (multi-line cells shift this; we say "row")
    return [RawRow(value, str(path), index=i) for i, value in enumerate(table.to_list())]


def _read_hf_folder(path: Path) -> list[RawRow]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(Problem(f"cannot load the saved dataset: {_first_line(exc)}", file=str(path))) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise InputError(
                Problem(f"the saved DatasetDict has no 'train' split (it has {', '.join(loaded)}).", file=str(path))
            )
        loaded = loaded["train"]
    return [RawRow(value, str(path), index=i) for i, value in enumerate(loaded.to_list())]


# -- helpers ----------------------------------------------------------------------------------


def _json_error(path: Path, line: int, column: int, message: str) -> InputError:
    return InputError(
        Problem(f"invalid JSON at column {column}: {message}. Fix the file at that line.", file=str(path), line=line)
    )


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _similar_names(path: Path) -> str:
    import difflib

    parent = path.parent if path.parent.is_dir() else None
    if parent is None:
        return ""
    close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3)
    return f" Did you mean {', '.join(str(parent / c) for c in close)}?" if close else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
