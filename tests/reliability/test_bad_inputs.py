"""Every bad input of the corpus in tests/reliability/bad_inputs/ through the real CLI.

Each case (tests/reliability/bad_inputs/cases.yaml) runs ``python train.py --config ...`` in a subprocess
from a fresh working directory and must: exit with code 2, print a message with the expected
fragment and the problem's location (file:line, key or path), show no traceback, and leave
every file outside the fresh run directory (``out/``) as it was, in the working directory and
in the corpus.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "bad_inputs"
RUN_DIR_NAME = "out"  # run.output_dir of the corpus workflows, relative to the working directory
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]
TIMEOUT_S = 600
# Paths the cases name because they do not exist (or cannot: a folder under a file).
MISSING_ON_PURPOSE = ("does_not_exist", "nothing_here", "output_path_is_a_file.txt/")


def _substitute(text: str, work_dir: Path) -> str:
    return text.replace("${CASE_DIR}", str(CORPUS)).replace("${RUN_DIR}", str(work_dir))


def _snapshot(root: Path, *, skip: str | None = None) -> dict[str, str]:
    """Path -> content hash of every file under root (Python's bytecode caches aside)."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts or (skip and relative.parts[0] == skip):
            continue
        files[str(relative)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _environment(case: dict, work_dir: Path) -> dict[str, str]:
    env = {**os.environ, "CASE_DIR": str(CORPUS), "COLUMNS": "400", "NO_COLOR": "1"}
    for key, value in (case.get("env") or {}).items():
        value = _substitute(value, work_dir)
        if key == "PYTHONPATH" and env.get("PYTHONPATH"):
            value = os.pathsep.join([value, env["PYTHONPATH"]])
        env[key] = value
    return env


def _cpu_has_bf16() -> bool:
    from plugins.training.device import cpu_supports_bf16

    return cpu_supports_bf16()


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.get("slow") else []
        yield pytest.param(case, id=case["id"], marks=marks)


def test_the_corpus_is_complete():
    """At least 40 files, every case's files exist, ids are unique."""
    files = [p for p in CORPUS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 40
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert (CORPUS / case["config"]).is_file(), case["id"]
        for arg in case.get("args", []):
            if "${CASE_DIR}" in arg and not any(name in arg for name in MISSING_ON_PURPOSE):
                assert Path(_substitute(arg.split("=", 1)[-1], CORPUS)).exists(), (case["id"], arg)


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_exits_2_with_a_located_message(case, tmp_path):
    if case.get("cpu_only") and _cpu_has_bf16():
        pytest.skip("this CPU has native bf16, so precision: bf16 is valid here")
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "notes.txt").write_text("a file of the user's that must stay as it is\n")
    corpus_before, work_before = _snapshot(CORPUS), _snapshot(work_dir)

    args = [_substitute(arg, work_dir) for arg in case.get("args", [])]
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(CORPUS / case["config"]), *args],
        cwd=work_dir,
        env=_environment(case, work_dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    # rich wraps long lines at the terminal width; the fragments are checked on unwrapped text.
    errors = re.sub(r"\s*\n\s*", " ", result.stderr)

    assert result.returncode == 2, f"exit {result.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output
    assert case["expect"] in errors, errors[-2000:]
    assert _substitute(case["where"], work_dir) in errors, errors[-2000:]
    assert _snapshot(CORPUS) == corpus_before, "the corpus was changed"
    assert _snapshot(work_dir, skip=RUN_DIR_NAME) == work_before, "files outside the run directory changed"


# -- files the corpus cannot hold: pipes, devices, a huge workflow ----------------------------


def _special_file(kind: str, folder: Path) -> Path:
    if kind == "device":
        return Path("/dev/zero")  # never ends
    if kind == "fifo":
        fifo = folder / "named_pipe.yaml"
        os.mkfifo(fifo)  # reading it waits for a writer that never comes
        return fifo
    huge = folder / "huge.yaml"
    huge.write_text("workflow: {}\n" + "#" * (2 * 2**20) + "\n")  # the YAML parser would take minutes
    return huge


@pytest.mark.parametrize(
    ("target", "kind", "expected"),
    [
        ("--config", "device", "is not a regular file (a pipe or a device?)"),
        ("--config", "fifo", "is not a regular file (a pipe or a device?)"),
        ("--config", "huge", "is 2 MiB; a workflow file is a few KiB"),
        ("--dataset", "device", "is not a regular file or folder (a pipe or a device?)"),
        ("--dataset", "fifo", "is not a regular file or folder (a pipe or a device?)"),
    ],
)
def test_pipes_devices_and_huge_files_are_refused_without_waiting(tmp_path, target, kind, expected):
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    special = _special_file(kind, tmp_path)
    config = special if target == "--config" else CORPUS / "base.yaml"
    extra = ["--dataset", str(special)] if target == "--dataset" else []
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(config), *extra, "--yes"],
        cwd=work_dir,
        env=_environment({}, work_dir),
        capture_output=True,
        text=True,
        timeout=120,  # a read that blocks or never ends would hit this
    )
    errors = re.sub(r"\s*\n\s*", " ", result.stderr)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"{special}: {expected}" in errors, errors[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
