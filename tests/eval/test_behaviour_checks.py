"""Behavioural checks: the checks file is validated row by row; each criterion passes and fails."""

from __future__ import annotations

import json

import pytest

from entity_training import InputError
from plugins.eval.behaviour import BehaviourCheck, judge, load_checks, pass_rate
from plugins.eval.metrics import first_words_rate, identical_rate


def _write(tmp_path, *lines: str):
    path = tmp_path / "checks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_good_rows_are_read_and_blank_lines_skipped(tmp_path):
    path = _write(
        tmp_path,
        json.dumps({"prompt": "Who are you?", "system": "Be brief.", "any_of": ["assistant", "helper"]}),
        "",
        json.dumps({"prompt": "Say hi", "all_of": ["hi"], "none_of": ["bye"], "regex": r"^\w+"}),
    )
    first, second = load_checks(path)
    assert first.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
    ]
    assert first.criteria() == {"any_of": ("assistant", "helper")}
    assert second.messages() == [{"role": "user", "content": "Say hi"}]
    assert set(second.criteria()) == {"all_of", "none_of", "regex"}


@pytest.mark.parametrize(
    "row, expected",
    [
        ('{"prompt": "Hi"}', "no criterion: give at least one of any_of, all_of, none_of, regex"),
        ('{"prompt": "Hi", "regex": "(unclosed"}', "regex: invalid regular expression"),
        ('{"prompt": "   ", "any_of": ["x"]}', "prompt: the prompt is empty"),
        ('{"prompt": "Hi", "any_off": ["x"]}', "unknown key 'any_off': did you mean 'any_of'?"),
        ('{"any_of": ["x"]}', "'prompt' is missing"),
        ('{"prompt": "Hi", "any_of": "x"}', "write phrases as a list"),
        ('{"prompt": "Hi", "none_of": [""]}', "a phrase is empty"),
        ('{"prompt": "Hi", "any_of": ["x"]', "not valid JSON"),
        ('["Hi", "x"]', "a row must be a JSON object"),
    ],
)
def test_each_bad_row_is_reported_at_its_line(tmp_path, row, expected):
    good = json.dumps({"prompt": "Fine", "any_of": ["ok"]})
    path = _write(tmp_path, good, row, good)
    with pytest.raises(InputError) as caught:
        load_checks(path)
    assert caught.value.exit_code == 2
    problems = caught.value.problems
    assert [(p.file, p.line) for p in problems] == [(str(path), 2)]
    assert expected in problems[0].message


def test_every_bad_row_is_reported_at_once(tmp_path):
    path = _write(tmp_path, '{"prompt": "a"}', '{"prompt": "b", "any_of": ["x"]}', '{"prompt": "", "regex": "("}')
    with pytest.raises(InputError) as caught:
        load_checks(path)
    assert [p.line for p in caught.value.problems] == [1, 3, 3]
    assert "behaviour checks file" in str(caught.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="does not exist; check behaviour_checks"):
        load_checks(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="has no rows"):
        load_checks(_write(tmp_path, ""))


ANSWER = "I am a helpful assistant, here to answer."


@pytest.mark.parametrize(
    "criteria, passed, failed",
    [
        ({"any_of": ["HELPFUL", "zebra"]}, True, None),
        ({"any_of": ["zebra", "giraffe"]}, False, "any_of: none of ['zebra', 'giraffe'] appears"),
        ({"all_of": ["answer", "Assistant"]}, True, None),
        ({"all_of": ["answer", "zebra"]}, False, "all_of: ['zebra'] missing"),
        ({"none_of": ["zebra"]}, True, None),
        ({"none_of": ["HELPFUL"]}, False, "none_of: ['HELPFUL'] present"),
        ({"regex": r"^I am a \w+"}, True, None),
        ({"regex": r"^i am"}, False, "regex: no match for '^i am'"),  # as written: case-sensitive
        ({"regex": r"(?i)^i am"}, True, None),
    ],
)
def test_each_criterion(criteria, passed, failed):
    verdict = judge(BehaviourCheck(prompt="Who are you?", **criteria), ANSWER)
    assert verdict.passed is passed
    assert verdict.failed == ((failed,) if failed else ())


def test_an_answer_must_meet_every_criterion_and_each_miss_is_named():
    check = BehaviourCheck(prompt="Who are you?", any_of=["answer"], none_of=["helpful"], regex="zebra")
    verdict = judge(check, ANSWER)
    assert not verdict.passed
    assert [line.split(":")[0] for line in verdict.failed] == ["none_of", "regex"]


def test_rates():
    assert pass_rate([True, False, True, True]) == 0.75 and pass_rate([]) == 0.0
    assert identical_rate([" a b ", "a c"], ["a b", "a b"]) == 0.5
    assert first_words_rate(["one two three", "one two four", "two"], ["one two five"] * 3, 2) == pytest.approx(2 / 3)
