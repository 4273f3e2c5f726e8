"""Behavioural checks: does the model do the taught thing on held-out prompts?

A checks file is JSON Lines, one held-out prompt a row, with what a passing answer must satisfy::

    {"prompt": "Who are you?", "system": "Be brief.", "any_of": ["assistant", "helper"],
     "all_of": [], "none_of": ["I don't know"], "regex": "(?i)^\\\\w"}

``any_of``: at least one phrase appears; ``all_of``: every phrase appears; ``none_of``: no phrase
appears (phrases compare case-insensitively); ``regex``: ``re.search`` finds a match (as written:
add ``(?i)`` to ignore case). A row needs at least one of them; an answer passes when it meets all
the row's criteria.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from entity_training import InputError, Problem

CRITERIA = ("any_of", "all_of", "none_of", "regex")
EXAMPLE_ROW = '{"prompt": "Who are you?", "any_of": ["assistant"], "none_of": ["I don\'t know"]}'


class BehaviourCheck(BaseModel):
    """One row of a checks file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    system: str | None = None
    any_of: tuple[str, ...] = ()
    all_of: tuple[str, ...] = ()
    none_of: tuple[str, ...] = ()
    regex: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty: give the user message the model must answer")
        return value

    @field_validator("any_of", "all_of", "none_of")
    @classmethod
    def _phrases_have_text(cls, phrases: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in phrases):
            raise ValueError("a phrase is empty (an empty phrase matches every answer): remove it")
        return phrases

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"invalid regular expression ({exc}); in JSON, write a backslash as \\\\ (\\\\d for \\d)"
                ) from None
        return pattern

    @model_validator(mode="after")
    def _has_a_criterion(self) -> BehaviourCheck:
        if not (self.any_of or self.all_of or self.none_of or self.regex):
            raise ValueError(f"no criterion: give at least one of {', '.join(CRITERIA)} (non-empty)")
        return self

    def messages(self) -> list[dict[str, str]]:
        """The conversation to answer: the optional system message, then the prompt."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.prompt}]

    def criteria(self) -> dict[str, Any]:
        return {name: value for name in CRITERIA if (value := getattr(self, name))}


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failed: tuple[str, ...]  # one line per criterion the answer did not meet

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": list(self.failed)}


def judge(check: BehaviourCheck, answer: str) -> Verdict:
    """Whether ``answer`` meets every criterion of ``check``, and which ones it misses."""
    text = answer.casefold()
    failed = []
    if check.any_of and not any(p.casefold() in text for p in check.any_of):
        failed.append(f"any_of: none of {list(check.any_of)} appears")
    missing = [p for p in check.all_of if p.casefold() not in text]
    if missing:
        failed.append(f"all_of: {missing} missing")
    present = [p for p in check.none_of if p.casefold() in text]
    if present:
        failed.append(f"none_of: {present} present")
    if check.regex is not None and not re.search(check.regex, answer):
        failed.append(f"regex: no match for {check.regex!r}")
    return Verdict(not failed, tuple(failed))


def judged(check: BehaviourCheck, answer: str) -> dict[str, Any]:
    """The report row of one answer: the answer, whether it passed, the criteria it missed."""
    return {"answer": answer, **judge(check, answer).to_dict()}


def pass_rate(passed: list[bool]) -> float:
    return sum(passed) / len(passed) if passed else 0.0


def load_checks(path: str | Path) -> list[BehaviourCheck]:
    """Every row of a checks file, validated; all bad rows are reported at once, by line.

    Raises InputError (exit code 2): the file is missing or unreadable, has no rows, or has bad rows.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(Problem("the behaviour checks file does not exist; check behaviour_checks", file=str(file)))
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            Problem(f"cannot read the checks file ({exc}); save it as UTF-8 JSON Lines", file=str(file))
        ) from None
    checks, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            checks.append(_parse_row(line))
        except _BadRow as bad:
            problems += [Problem(reason, file=str(file), line=number) for reason in bad.reasons]
    if problems:
        raise InputError(problems, title=f"{len(problems)} problem(s) in the behaviour checks file {file}")
    if not checks:
        raise InputError(
            Problem(f"the checks file has no rows; write one JSON object a line, e.g. {EXAMPLE_ROW}", file=str(file))
        )
    return checks


class _BadRow(Exception):
    def __init__(self, *reasons: str):
        self.reasons = reasons


def _parse_row(line: str) -> BehaviourCheck:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadRow(f"not valid JSON ({exc.msg}, column {exc.colno}); write one JSON object a line") from None
    if not isinstance(row, dict):
        raise _BadRow(f"a row must be a JSON object like {EXAMPLE_ROW}")
    try:
        return BehaviourCheck.model_validate(row)
    except ValidationError as exc:
        raise _BadRow(*(_describe(error) for error in exc.errors(include_url=False))) from None


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    fields = list(BehaviourCheck.model_fields)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"a row has {', '.join(fields)}"
        return f"unknown key {key!r}: {hint}"
    if error["type"] == "missing":
        return f'{key!r} is missing: give the user message as "prompt"'
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] in ("list_type", "tuple_type"):
        message += ' (write phrases as a list: ["a", "b"])'
    return f"{key}: {message}" if key else message
