"""SIGKILL a streaming run mid-way between checkpoints, then ``--resume``: the same batches, the same loss.

The tiny model trains 8 steps of 2 micro-batches of 2 packed rows on a stream that mixes two
sources by trained tokens (the sample data, cycling over its first 30 rows, at weight 2; the quick
start's rows at weight 1), through a seeded shuffle buffer and packing, checkpointing every 3 steps. The
kill comes once step 4 is logged: after checkpoint-3, before checkpoint-6, so the killed run has
trained a step its checkpoint does not hold. The resumed run restores the stream from
checkpoint-3's saved state (file positions, mixture, buffer, open rows, RNG); every step's micro-batch
digests (``batches.jsonl``) and the final training and validation losses must equal those of the
same workflow run straight through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.kill import kill_when, training_result, training_step_logged
from helpers.workflows import SAMPLE_DATA, write_workflow

REPO = Path(__file__).resolve().parents[2]
SOURCES = [
    {"path": str(SAMPLE_DATA), "name": "sample", "weight": 2, "max_samples": 30},
    {"path": str(REPO / "data" / "quickstart" / "train.jsonl"), "name": "pebble", "weight": 1},
]
MAX_STEPS = 8
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _write_workflow(folder: Path, run_dir: Path) -> Path:
    folder.mkdir()
    return write_workflow(
        folder,
        run={"name": "stream-kill", "output_dir": str(run_dir), "seed": 7},
        dataset={
            "dataset_path": None,
            "sources": SOURCES,
            "mix_by": "tokens",
            "streaming": True,
            "shuffle_buffer": 24,
            "validation_rows": 3,
        },
        training={
            "training_method": "lora",
            "learning_rate": 1.0e-3,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "max_steps": MAX_STEPS,
            "save_steps": 3,
            "logging_steps": 1,
            "lora_dropout": 0.1,
        },
        preparation={"max_seq_length": 192},
    )


def _command(workflow: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--config", str(workflow), "--yes", *extra]


def _run(workflow: Path, *extra: str) -> None:
    done = subprocess.run(_command(workflow, *extra), cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr


def _digests(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "batches.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_killed_streaming_run_resumes_the_same_stream(tmp_path):
    straight = tmp_path / "straight"
    _run(_write_workflow(tmp_path / "a", straight))
    reference = training_result(straight)

    killed = tmp_path / "killed"
    workflow = _write_workflow(tmp_path / "b", killed)
    kill_when(
        _command(workflow), cwd=REPO, run_dir=killed, reached=training_step_logged(4), timeout=RUN_TIMEOUT_S,
        log=tmp_path / "first.log",
    )  # fmt: skip
    assert (killed / "checkpoints" / "checkpoint-3").is_dir()
    assert not (killed / "checkpoints" / "checkpoint-6").exists()
    _run(workflow, "--resume")

    result = training_result(killed)
    assert result["resumed_from"].endswith("checkpoint-3")
    expected = _digests(straight)
    assert [record["step"] for record in expected] == list(range(1, MAX_STEPS + 1))
    assert all(len(record["micro_batches"]) == 2 for record in expected)
    assert _digests(killed) == expected
    assert result["steps"] == reference["steps"] == MAX_STEPS
    assert result["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert result["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], rel=1e-5)
    # Both sources were mixed near their shares, and the sample source cycled over its 30 rows, in both runs alike.
    mixture = reference["stream"]["mixture"]
    assert mixture["sample"]["share_tokens"] == pytest.approx(2 / 3, abs=0.05)
    assert mixture["pebble"]["share_tokens"] == pytest.approx(1 / 3, abs=0.05)
    assert reference["stream"]["sources"]["sample"]["passes_started"] >= 2
    assert result["stream"] == reference["stream"]
