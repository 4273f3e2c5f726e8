"""Two CPU processes (gloo) train the tiny model under torchrun, through train.py: every rank
trains, only the main process publishes checkpoints and the final model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.workflows import write_workflow

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    run_dir = tmp_path / "run"
    config = write_workflow(
        tmp_path,
        name="ddp.yaml",
        run={"name": "ddp", "output_dir": run_dir, "seed": 3},
        dataset={"validation_split": 0.1, "max_samples": 40},
        training={
            "training_method": "lora",
            "learning_rate": 1.0e-3,
            "batch_size": 2,
            "max_steps": 4,
            "save_steps": 2,
            "logging_steps": 1,
        },
        preparation={"max_seq_length": 128, "cache_dir": tmp_path / "tokenized"},
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
         "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    memory = json.loads((run_dir / "memory.json").read_text())["entries"]
    result = memory["training.result"]
    assert result["world_size"] == 2 and result["steps"] == 4
    checkpoint = run_dir / "checkpoints" / "checkpoint-4"
    # Each rank saved its RNG state into the staged checkpoint before the main process published it.
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert (run_dir / "final-model" / "adapter_model.safetensors").is_file()
    assert not list((run_dir / "checkpoints" / ".staging").glob("checkpoint-*"))
