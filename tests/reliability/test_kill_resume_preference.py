"""SIGKILL a DPO run after a checkpoint, then ``--resume`` it: it ends as an uninterrupted run does.

configs/dpo.yaml on the tiny model (6 steps, a checkpoint every 2, the reference log-probabilities
from the base with the adapter off) runs in a subprocess; the kill comes once checkpoint-2 is
published, mid-training. The resumed run must report the same steps, training loss and held-out
loss as the same workflow run straight through (CPU, fixed seed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.kill import checkpoint_published, kill_when, training_result

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 6
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "--config", "configs/dpo.yaml", "--model", "tiny",
        "--max-steps", str(MAX_STEPS), "--output", str(run_dir), "--yes",
        "--set", "training_config.save_steps=2", "--set", "training_config.logging_steps=1",
        "--set", "evaluation.on_fail=continue", *extra,
    ]  # fmt: skip


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(run_dir, *extra), cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_a_killed_dpo_run_resumes_to_the_same_losses(tmp_path):
    straight = tmp_path / "straight"
    _run(straight)
    reference = training_result(straight)

    run_dir = tmp_path / "killed"
    kill_when(
        _command(run_dir), cwd=REPO, run_dir=run_dir, reached=checkpoint_published(2), timeout=RUN_TIMEOUT_S,
        log=tmp_path / "first.log",
    )  # fmt: skip
    _run(run_dir, "--resume")

    result = training_result(run_dir)
    assert result["resumed_from"] is not None
    assert result["steps"] == reference["steps"] == MAX_STEPS
    assert result["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert result["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], rel=1e-5)
    assert json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["status"] == "success"
