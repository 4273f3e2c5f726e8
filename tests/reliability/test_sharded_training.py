"""Sharded training on two CPU processes (gloo) through ``accelerate launch``: FSDP2
(``configs/accelerate/fsdp_cpu.yaml``) for full and LoRA fine-tuning, and DeepSpeed ZeRO-3 (LoRA)
and ZeRO-2 (full) where deepspeed is installed (``DS_ACCELERATOR=cpu``). Each run writes sharded
checkpoints and a final model that ``from_pretrained`` loads and that matches one process
trained on the same rows; the FSDP runs and the ZeRO-3 run are SIGKILLed (launcher and every
rank) after their first checkpoint and resumed with ``--resume``.

The pairing: 2 ranks x batch 1 against 1 process x batch 2. Both draw the same shuffled order (the
Trainer's seeded sampler), and accelerate hands rank r the r-th batch of 1, so each optimizer step
sees the same two rows; the loss is normalised by the trained tokens of the whole step on both
sides, so the gradients are the same sums, added in another order.

Measured on this project's 2-core CPU (fp32, lr 1e-3, 4 steps): the logits of the final models on a
fixed input differ by at most 1.4e-6 for LoRA and 1.2e-6 for full fine-tuning without gradient
clipping (|logits| up to 3.1). With clipping on and active (full fine-tuning's gradient norm is
~1.4 > max_grad_norm 1.0), full fine-tuning differs by 1.6e-5 under FSDP2 and 2.1e-5 under ZeRO-2
and ZeRO-3, and by 1.4e-6 under plain DDP on the same two processes: FSDP and ZeRO compute the
total gradient norm from per-shard sums, so the clipping factor, and through Adam every later
step, moves in the last bits. Full fine-tuning therefore runs with max_grad_norm 0 to be held to
1e-5; LoRA keeps the default clipping (not reached: its gradient norm is ~0.08).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers.kill import checkpoint_published, kill_when
from helpers.launch import RUN_TIMEOUT_S, accelerate_command, launch_env, output_of, run, train_command
from helpers.workflows import write_workflow

pytestmark = pytest.mark.slow

STEPS = 4
LOGIT_TOLERANCE = 1e-5
SETTINGS = {
    "full": {"max_grad_norm": 0.0},
    "lora": {"lora_dropout": 0.0},  # dropout would draw different masks on each rank
}
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install -e '.[deepspeed]'; it compiles a kernel on first use)",
)
# accelerate config, method, killed after its first checkpoint and resumed
CASES = [
    pytest.param("fsdp_cpu.yaml", "full", True, id="fsdp2-full"),
    pytest.param("fsdp_cpu.yaml", "lora", True, id="fsdp2-lora"),
    pytest.param("deepspeed_zero3.yaml", "lora", True, id="zero3-lora", marks=needs_deepspeed),
    pytest.param("deepspeed_zero2.yaml", "full", False, id="zero2-full", marks=needs_deepspeed),
]
# What makes a checkpoint sharded: each rank's part of the state, in the checkpoint of a step.
SHARDS = {
    "fsdp_cpu.yaml": ["pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/.metadata"],
    "deepspeed_zero3.yaml": ["global_step{step}/zero_pp_rank_0_mp_rank_00_model_states.pt",
                             "global_step{step}/zero_pp_rank_1_mp_rank_00_model_states.pt"],
    "deepspeed_zero2.yaml": ["global_step{step}/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                             "global_step{step}/zero_pp_rank_1_mp_rank_00_optim_states.pt"],
}  # fmt: skip


def _missing_shards(accelerate_config: str, run_dir: Path, step: int) -> list[str]:
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
    names = [name.format(step=step) for name in SHARDS[accelerate_config]]
    return [name for name in names if not (checkpoint / name).is_file()]


def _workflow(folder: Path, method: str, *, batch_size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_workflow(
        folder,
        run={"name": f"sharded-{method}", "output_dir": folder / "run", "seed": 3},
        dataset={"validation_split": 0.1, "max_samples": 40},
        training={
            "training_method": method,
            "learning_rate": 1.0e-3,
            "batch_size": batch_size,
            "max_steps": STEPS,
            "save_steps": 2,
            "logging_steps": 1,
            "precision": "fp32",  # bf16 on CPUs that have it would hide the comparison in rounding
            **SETTINGS[method],
        },
        preparation={"max_seq_length": 128, "cache_dir": folder.parent / "tokenized"},
    )


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "memory.json").read_text(encoding="utf-8"))["entries"]["training.result"]


def _logits(folder: Path):
    import torch

    from plugins.eval.loading import load_trained_model

    model = load_trained_model(folder, base_model="tiny")
    with torch.no_grad():
        return model(torch.arange(5, 69).unsqueeze(0)).logits


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The run dir of one process training each method on batch 2, made once per method."""
    made: dict[str, Path] = {}

    def run_dir(method: str) -> Path:
        if method not in made:
            folder = tmp_path_factory.mktemp(f"one-process-{method}")
            done = run(train_command(_workflow(folder, method, batch_size=2)), cwd=folder)
            assert done.returncode == 0, output_of(done)
            made[method] = folder / "run"
        return made[method]

    return run_dir


@pytest.mark.parametrize(("accelerate_config", "method", "killed"), CASES)
def test_sharded_run_matches_one_process(accelerate_config, method, killed, one_process, tmp_path):
    folder = tmp_path / "sharded"
    workflow = _workflow(folder, method, batch_size=1)
    run_dir = folder / "run"
    env = launch_env(DS_ACCELERATOR="cpu")
    if killed:
        # The launcher and every rank, as soon as checkpoint-2 is published: a machine lost mid-run.
        kill_when(accelerate_command(accelerate_config, workflow), cwd=folder, run_dir=run_dir, env=env,
                  reached=checkpoint_published(2), timeout=RUN_TIMEOUT_S, log=tmp_path / "killed.log")  # fmt: skip
        assert not (run_dir / "final-model").exists()
        assert _missing_shards(accelerate_config, run_dir, 2) == []
        done = run(accelerate_command(accelerate_config, workflow, "--resume"), cwd=folder, env=env)
    else:
        done = run(accelerate_command(accelerate_config, workflow), cwd=folder, env=env)
    assert done.returncode == 0, output_of(done)
    assert _missing_shards(accelerate_config, run_dir, STEPS) == []

    reference_dir = one_process(method)
    result, reference = _result(run_dir), _result(reference_dir)
    assert result["world_size"] == 2 and result["steps"] == reference["steps"] == STEPS
    if killed:
        assert result["resumed_from"] and Path(result["resumed_from"]).name == "checkpoint-2"
    losses = [r["loss"] for r in result["log_history"] if "loss" in r]
    reference_losses = [r["loss"] for r in reference["log_history"] if "loss" in r]
    # A resumed run logs only the steps after its checkpoint: they match the same steps of one process.
    assert losses == pytest.approx(reference_losses[-len(losses) :], rel=1e-5)

    final = run_dir / "final-model"
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (final / weights).is_file()
    difference = (_logits(final) - _logits(reference_dir / "final-model")).abs().max().item()
    assert difference <= LOGIT_TOLERANCE
