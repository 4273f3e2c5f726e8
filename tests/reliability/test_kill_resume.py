"""Kill at any moment: SIGKILL a real run at several points, then ``--resume`` it to the end.

A workflow like configs/default.yaml on the tiny model (6 steps, a checkpoint every 2, then a
verified Hugging Face export) runs in a subprocess. Each kill point waits for a moment seen from
outside (events.jsonl, the checkpoints folder), sends SIGKILL, and runs ``--resume``. The resumed
run must finish with the planned number of steps, the same training and evaluation loss and the
same batches (``batches.jsonl``) as an uninterrupted run (CPU, fixed seed), loadable final
weights, an export, and no lock file left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.kill import (
    checkpoint_published,
    events,
    kill_when,
    plugin_started,
    training_result,
    training_step_logged,
)
from helpers.workflows import step, write_workflow

from plugins.training.batch_digests import read_batch_digests

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 6
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _write_workflow(folder: Path) -> Path:
    """A workflow like configs/default.yaml on the tiny model."""
    return write_workflow(
        folder,
        run={"name": "kill-test", "output_dir": "run", "seed": 42},
        dataset={"validation_split": 0.1},
        training={
            "training_method": "lora",
            "learning_rate": 1.0e-3,
            "batch_size": 2,
            "max_steps": MAX_STEPS,
            "save_steps": 2,
            "save_total_limit": 2,
            "logging_steps": 1,
            "lora_dropout": 0.1,
        },
        preparation={"max_seq_length": 256},
        output=[step("model_export", export_formats=["huggingface"], verify_prompts=2)],
    )


def _command(work_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--config", str(work_dir / "wf.yaml"), "--yes", *extra]


def _run(work_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(work_dir, *extra), cwd=work_dir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def _checkpoint_being_written(run_dir: Path) -> bool:
    staging = run_dir / "checkpoints" / ".staging"
    return staging.is_dir() and any(staging.iterdir())


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "at_start_during_input": lambda run_dir: any(e["type"] == "run_start" for e in events(run_dir)),
    "during_model_build_and_config": plugin_started("training_config"),
    "during_tokenization": plugin_started("data_preparation"),
    "mid_training_before_any_checkpoint": training_step_logged(1),
    "during_a_checkpoint_write": _checkpoint_being_written,
    "between_checkpoints": checkpoint_published(2),
    "after_the_last_checkpoint": checkpoint_published(MAX_STEPS),
    "during_export": plugin_started("model_export"),
}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    work_dir = tmp_path_factory.mktemp("reference")
    _write_workflow(work_dir)
    result = _run(work_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work_dir / "run"


@pytest.fixture(scope="module")
def reference(reference_dir) -> dict:
    return training_result(reference_dir)


# Known bug (training plugin, reported): resuming from a checkpoint saved at step == max_steps trains
# one extra step (7 of 6, learning rate 0), so the steps and the loss differ from the reference.
KNOWN_FAILURES: dict[str, str] = {}  # kill point -> reason, for a known bug awaiting its fix


def _points():
    for point in KILL_POINTS:
        marks = [pytest.mark.xfail(reason=KNOWN_FAILURES[point], strict=True)] if point in KNOWN_FAILURES else []
        yield pytest.param(point, id=point, marks=marks)


@pytest.mark.parametrize("point", list(_points()))
def test_killed_run_resumes_to_the_same_result(point, reference, reference_dir, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    _write_workflow(tmp_path)
    run_dir = tmp_path / "run"
    kill_when(
        _command(tmp_path), cwd=tmp_path, run_dir=run_dir, reached=KILL_POINTS[point], timeout=RUN_TIMEOUT_S,
        log=tmp_path / "first.log",
    )  # fmt: skip

    resumed = _run(tmp_path, "--resume")
    output = resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert resumed.returncode == 0, output
    assert "Traceback" not in output

    result = training_result(run_dir)
    assert result["steps"] == reference["steps"] == MAX_STEPS
    assert result["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert result["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], rel=1e-5)
    # The same batches in the same order, step by step (batches.jsonl).
    assert read_batch_digests(run_dir) == read_batch_digests(reference_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "success"
    assert not (run_dir / "run.lock").exists()
    assert (run_dir / "export" / "huggingface").is_dir()

    from plugins.eval.loading import load_trained_model

    model = load_trained_model(run_dir / "final-model", base_model="tiny")
    assert sum(p.numel() for p in model.parameters()) > 0
