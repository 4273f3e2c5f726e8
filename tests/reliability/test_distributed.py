"""Data parallel training across two "nodes": two torchrun groups on this machine
(``--nnodes 2 --nproc-per-node 1``, c10d rendezvous on 127.0.0.1, gloo over loopback) run
train.py on one workflow and one run directory, as two machines on shared storage would. Every
rank trains; only the global main process (RANK 0; each node's process is LOCAL_RANK 0) writes
the run's files, publishes checkpoints and saves the final model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.launch import REPO, RUN_TIMEOUT_S, free_port, launch_env
from helpers.workflows import write_workflow


def _node_command(node_rank: int, port: int, config: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", "two-nodes", "--local-addr", "127.0.0.1", str(REPO / "train.py"), "--config", str(config), "--yes",
    ]  # fmt: skip


@pytest.mark.slow
def test_two_nodes_on_loopback_train_one_model(tmp_path):
    run_dir = tmp_path / "run"
    config = write_workflow(
        tmp_path,
        name="two_nodes.yaml",
        run={"name": "two-nodes", "output_dir": run_dir, "seed": 3},
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
    port = free_port()
    env = launch_env(GLOO_SOCKET_IFNAME="lo")
    logs = [(tmp_path / f"node{rank}.log").open("w") for rank in (0, 1)]
    nodes = [
        subprocess.Popen(_node_command(rank, port, config), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        for rank, log in enumerate(logs)
    ]
    try:
        codes = [node.wait(timeout=RUN_TIMEOUT_S) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
        for log in logs:
            log.close()
    output = "\n".join((tmp_path / f"node{rank}.log").read_text()[-3000:] for rank in (0, 1))
    assert codes == [0, 0], output

    memory = json.loads((run_dir / "memory.json").read_text())["entries"]
    result = memory["training.result"]
    assert result["world_size"] == 2 and result["steps"] == 4
    checkpoint = run_dir / "checkpoints" / "checkpoint-4"
    # Each rank saved its RNG state into the staged checkpoint before the main process published it.
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert not list((run_dir / "checkpoints" / ".staging").glob("checkpoint-*"))
    assert (run_dir / "final-model" / "adapter_model.safetensors").is_file()
    # One writer: a single run in the events and one final model in the run directory.
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("run_start") == 1
    assert sorted(p.name for p in run_dir.rglob("final-model")) == ["final-model"]
