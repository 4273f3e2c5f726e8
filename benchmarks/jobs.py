"""The benchmarked job, both ways: our workflow (a generated YAML run by ``entity-train run``) and
the same rows in TRL's prompt/completion format for benchmarks/trl_job.py. Shared by
throughput.py and startup.py."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.common import PYTHON, REPO, ChildRun, read_json, require_ok, run_child

ENTITY_TRAIN = str(Path(sys.executable).with_name("entity-train"))
TRL_JOB = str(REPO / "benchmarks" / "trl_job.py")
# The adapter of every benchmarked LoRA job, ours and TRL's (its LoraConfig is written out in the TRL scripts).
BENCHMARK_LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


@dataclass(frozen=True)
class Job:
    """What both sides train: the same rows, model, length and micro-batch (in packed rows)."""

    dataset: Path
    rows: int
    model: str = "small"
    method: str = "lora"
    max_length: int = 512
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_steps: int | None = None
    # fp32 like TRL's careful variant; "auto" is our default (bf16 on CPUs with native bf16 maths).
    precision: str = "fp32"
    # Ours: "auto" (our default: on only when the memory plan says the job does not fit), True or False.
    gradient_checkpointing: bool | str = "auto"


def workflow_yaml(job: Job, *, cache_dir: Path | None = None) -> str:
    """Our workflow for ``job``: first ``rows`` rows in file order, none held out for validation
    (validation_split 0: TRL trains the same rows), no checkpoints, LoRA r16 all-linear."""
    preparation = {"max_seq_length": job.max_length, "packing": True, "train_on": "assistant"}
    if cache_dir is not None:
        preparation["cache_dir"] = str(cache_dir)
    workflow = {
        "run": {"name": "benchmark", "output_dir": "outputs/benchmark", "seed": 0},
        "workflow": {
            "INPUT": [
                {
                    "plugin": "dataset_loader",
                    "config": {
                        "dataset_path": str(job.dataset),
                        "max_samples": job.rows,
                        "validation_split": 0.0,
                        "shuffle": False,
                    },
                }
            ],
            "PARSE": [
                {
                    "plugin": "training_config",
                    "config": {
                        "model_name_or_path": job.model,
                        "training_method": job.method,
                        "learning_rate": job.learning_rate,
                        "num_epochs": 1,
                        "max_steps": job.max_steps,
                        "batch_size": job.batch_size,
                        "gradient_accumulation_steps": 1,
                        **BENCHMARK_LORA,
                        "save_steps": None,
                        "logging_steps": 10,
                        "precision": job.precision,
                        "gradient_checkpointing": job.gradient_checkpointing,
                    },
                }
            ],
            "THINK": [{"plugin": "data_preparation", "config": preparation}, {"plugin": "memory_plan"}],
            "DO": [{"plugin": "fine_tuning"}],
        },
    }
    return yaml.safe_dump(workflow, sort_keys=False)


def run_ours(job: Job, work: Path, *, cache_dir: Path | None = None, env: dict | None = None) -> dict:
    """Run our workflow in a child process; the measurements from its run directory."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "workflow.yaml"
    config.write_text(workflow_yaml(job, cache_dir=cache_dir), encoding="utf-8")
    run_dir = work / "run"
    child = run_child([ENTITY_TRAIN, "run", str(config), "-o", str(run_dir), "--overwrite", "--yes"], env=env)
    require_ok(child, "our workflow")
    memory = read_json(run_dir / "memory.json")["entries"]
    result = memory["training.result"]
    stages = {record["plugin"]: record["seconds"] for record in read_json(run_dir / "run.json")["stages"]}
    return {
        **_child_fields(child),
        "first_step_seconds": _first_step_seconds(run_dir / "events.jsonl", child.started_at),
        "train_seconds": result["train_seconds"],
        "do_stage_seconds": stages.get("fine_tuning"),
        "stage_seconds": stages,
        "trained_tokens": result["trained_tokens"],
        "steps": result["steps"],
        "gradient_checkpointing": result["gradient_checkpointing"],
        "train_loss": result["average_train_loss"],
        "token_stats": memory.get("dataset.token_stats"),
        "train_rows": (memory.get("dataset.stats") or {}).get("train_rows"),
        "validation_rows": (memory.get("dataset.stats") or {}).get("validation_rows"),
    }


def _first_step_seconds(events: Path, started_at: float) -> float | None:
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("type") == "progress" and event.get("task") == "training" and event.get("completed", 0) >= 1:
            return event["time"] - started_at
    return None


def write_trl_rows(job: Job, path: Path) -> list[dict]:
    """The job's rows as prompt/completion conversations (TRL then trains on the completion only,
    as we train on the assistant turn)."""
    from plugins.data.dataset import load_conversations

    conversations = load_conversations([job.dataset]).conversations[: job.rows]
    rows = [{"prompt": c["messages"][:-1], "completion": c["messages"][-1:]} for c in conversations]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows


def mean_sample_tokens(rows: list[dict], tokenizer) -> float:
    """Average tokens of one unpacked sample, to give the unpacked variants the same tokens per batch."""
    lengths = [
        len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False))
        for row in rows
    ]
    return sum(lengths) / max(len(lengths), 1)


def run_trl(
    job: Job,
    model_dir: Path,
    data: Path,
    work: Path,
    *,
    packing: bool,
    fp32: bool,
    gradient_checkpointing: bool | None,
    batch_size: int,
    max_steps: int | None = None,
    use_cpu: bool = False,
    env: dict | None = None,
) -> dict:
    """Run benchmarks/trl_job.py in a child process; ``gradient_checkpointing=None`` keeps TRL's default.
    ``max_steps`` defaults to the job's (None: one epoch)."""
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "trl-result.json"
    command = [PYTHON, TRL_JOB, "--model", str(model_dir), "--data", str(data), "--result", str(result_path)]
    command += ["--batch-size", str(batch_size), "--max-length", str(job.max_length), "--method", job.method]
    command += ["--learning-rate", str(job.learning_rate)]
    if packing:
        command.append("--packing")
    if fp32:
        command.append("--fp32")
    if gradient_checkpointing is False:
        command.append("--no-gradient-checkpointing")
    max_steps = max_steps or job.max_steps
    if max_steps:
        command += ["--max-steps", str(max_steps)]
    if use_cpu:
        command.append("--use-cpu")
    child = run_child(command, env=env)
    require_ok(child, "the TRL script")
    result = read_json(result_path)
    first = result["first_step_at"]
    return {**_child_fields(child), **result, "first_step_seconds": first - child.started_at if first else None}


def _child_fields(child: ChildRun) -> dict:
    return {
        "wall_seconds": child.wall_seconds,
        "cpu_seconds": child.cpu_seconds,
        "peak_rss_bytes": child.peak_rss_bytes,
    }
