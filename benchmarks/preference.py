"""DPO with LoRA, ours against TRL's DPOTrainer: the same pairs, model, length, batch and steps,
each side a fresh process from the data file to the saved adapter, alternating, medians (issue #18).

    python benchmarks/preference.py              # SmolLM2-135M-Instruct, 6 steps x 2 rounds (~8 min on 2 cores)
    python benchmarks/preference.py --quick      # built-in `tiny`, 1 round, RESULTS.md untouched (~2 min)
    python benchmarks/preference.py --small      # built-in `small`, 2 rounds
    python benchmarks/preference.py [--model NAME] [--pairs 20] [--steps 10] [--batch-size 2]
        [--max-length 512] [--repeats 2] [--precision auto|bf16|fp32] [--no-write]

Ours: ``entity-train run`` on a generated workflow (dataset_loader -> training_config ->
data_preparation -> memory_plan -> preference_training, loss dpo, beta 0.1), the pairs in their
ShareGPT file, a fresh tokenized cache per run. TRL: benchmarks/trl_dpo_job.py, the same pairs
converted to its conversational prompt/chosen/rejected format, a fresh ``datasets`` cache per run.
Both: LoRA r16/alpha 32/dropout 0 on all linear layers, the reference = the adapter disabled, lr
5e-5 with a cosine schedule, no warm-up, seed 0, the same precision (bf16 where the CPU has native
bf16, else fp32), gradient checkpointing off on both (DPOConfig's default is on; ours decides by
its memory plan and keeps it off here), every step logged.

Truncation differs (ours keeps the end of a long prompt and cuts the answers; TRL keeps the start
of prompt + answer and drops pairs whose prompt alone fills max_length), so the benchmark trains
only pairs whose both sequences fit in ``--max-length`` under the model's chat template: neither
side truncates and both see the same tokens (checked: the trained tokens are printed beside).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    PYTHON,
    REPO,
    fill_from_preset,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    model_folder,
    model_label,
    read_json,
    require_dataset,
    require_ok,
    run_child,
    write_section,
)
from benchmarks.jobs import BENCHMARK_LORA, ENTITY_TRAIN  # noqa: E402

TRL_JOB = str(REPO / "benchmarks" / "trl_dpo_job.py")
REAL_MODEL = "smollm2-135m-instruct"
DATASET = "dpo_en_demo.json"
PRESETS = {
    "real": {"model": REAL_MODEL, "pairs": 12, "steps": 6, "repeats": 2},
    "small": {"model": "small", "pairs": 12, "steps": 6, "repeats": 2},
    "quick": {"model": "tiny", "pairs": 8, "steps": 4, "repeats": 1},
}


@dataclass(frozen=True)
class PreferenceJob:
    """What both sides train."""

    model: str
    pairs_file: Path  # ShareGPT pairs for ours
    trl_file: Path  # the same pairs, conversational prompt/chosen/rejected, for TRL
    pairs: int
    steps: int
    batch_size: int
    max_length: int
    learning_rate: float
    precision: str  # "bf16" or "fp32", resolved for this machine


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"registry name, built-in or folder (default {REAL_MODEL})")
    parser.add_argument("--small", action="store_true", help="built-in `small` instead of the real model")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, 8 pairs, 4 steps, 1 round")
    parser.add_argument("--pairs", type=int, default=None, help="pairs trained (the first that fit --max-length)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps on both sides")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step (2 sequences each)")
    parser.add_argument("--max-length", type=int, default=512, help="longest sequence (prompt + answer) in tokens")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--repeats", type=int, default=None, help="alternating rounds; medians are reported")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    fill_from_preset(args, PRESETS)
    if args.quick:
        args.no_write = True
    return args


def main() -> None:
    args = parse_args()
    load_start = load_average()
    print(f"load average at start: {load_start}")
    from plugins.training.device import cpu_supports_bf16

    model_dir = model_folder(args.model)  # converts a registry GGUF once, before anything is timed
    precision = args.precision if args.precision != "auto" else ("bf16" if cpu_supports_bf16() else "fp32")
    work = Path(tempfile.mkdtemp(prefix="preference-bench-"))
    pairs_file, trl_file, fitting = write_pairs(args, model_dir, work)
    job = PreferenceJob(
        model=args.model,
        pairs_file=pairs_file,
        trl_file=trl_file,
        pairs=args.pairs,
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        precision=precision,
    )
    print(f"{args.model} ({model_dir}): {args.pairs} pairs of {fitting} that fit {args.max_length} tokens, {precision}")
    results: dict[str, list[dict]] = {"ours": [], "trl": []}
    for round_index in range(args.repeats):
        order = ["ours", "trl"] if round_index % 2 == 0 else ["trl", "ours"]
        for side in order:
            run_work = work / f"{side}-{round_index}"
            before = load_average()
            result = run_ours(job, run_work) if side == "ours" else run_trl(job, model_dir, run_work)
            result["load"] = f"{before} -> {load_average()}"
            results[side].append(result)
            print(f"round {round_index + 1} {side}: {summary_line(result)}", flush=True)
    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(job, results, fitting, args, load_start, load_end)
    print(report)
    if not args.no_write:
        write_section(f"preference-{model_label(args.model)}", report)


def write_pairs(args, model_dir: Path, work: Path) -> tuple[Path, Path, int]:
    """The first ``args.pairs`` pairs of dpo_en_demo.json whose chosen and rejected conversations both
    fit ``max_length`` tokens: as ShareGPT rows for ours, as prompt/chosen/rejected for TRL."""
    from transformers import AutoTokenizer

    from plugins.data.dataset import load_conversations

    source = require_dataset(DATASET)
    raw = json.loads(source.read_text(encoding="utf-8"))
    conversations = load_conversations([source]).conversations
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def tokens(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    fitting = [
        index
        for index, row in enumerate(conversations)
        if max(tokens(row["messages"] + row["chosen"]), tokens(row["messages"] + row["rejected"])) <= args.max_length
    ]
    if len(fitting) < args.pairs:
        raise SystemExit(f"only {len(fitting)} pairs of {source} fit {args.max_length} tokens; ask for fewer --pairs")
    chosen = fitting[: args.pairs]
    pairs_file = work / "pairs.json"
    pairs_file.write_text(json.dumps([raw[i] for i in chosen], ensure_ascii=False), encoding="utf-8")
    trl_file = work / "pairs-trl.jsonl"
    trl_rows = [
        {
            "prompt": [_plain(m) for m in conversations[i]["messages"]],
            "chosen": [_plain(m) for m in conversations[i]["chosen"]],
            "rejected": [_plain(m) for m in conversations[i]["rejected"]],
        }
        for i in chosen
    ]
    trl_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in trl_rows), encoding="utf-8")
    return pairs_file, trl_file, len(fitting)


def _plain(message: dict) -> dict:
    return {"role": message["role"], "content": message["content"]}


def workflow_yaml(job: PreferenceJob, cache_dir: Path) -> str:
    """Our workflow for ``job``: the pairs in file order, none held out, no checkpoints."""
    workflow = {
        "run": {"name": "preference-benchmark", "output_dir": "outputs/preference-benchmark", "seed": 0},
        "workflow": {
            "INPUT": [
                {
                    "plugin": "dataset_loader",
                    "config": {"dataset_path": str(job.pairs_file), "validation_split": 0.0, "shuffle": False},
                }
            ],
            "PARSE": [
                {
                    "plugin": "training_config",
                    "config": {
                        "model_name_or_path": job.model,
                        "training_method": "lora",
                        "learning_rate": job.learning_rate,
                        "max_steps": job.steps,
                        "batch_size": job.batch_size,
                        "gradient_accumulation_steps": 1,
                        **BENCHMARK_LORA,
                        "save_steps": None,
                        "logging_steps": 1,
                        "precision": job.precision,
                        "gradient_checkpointing": False,
                    },
                }
            ],
            "THINK": [
                {
                    "plugin": "data_preparation",
                    "config": {"max_seq_length": job.max_length, "cache_dir": str(cache_dir)},
                },
                {"plugin": "memory_plan"},
            ],
            "DO": [{"plugin": "preference_training", "config": {"loss": "dpo", "beta": 0.1}}],
        },
    }
    return yaml.safe_dump(workflow, sort_keys=False)


def run_ours(job: PreferenceJob, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "workflow.yaml"
    config.write_text(workflow_yaml(job, work / "cache"), encoding="utf-8")
    run_dir = work / "run"
    child = run_child([ENTITY_TRAIN, "run", str(config), "-o", str(run_dir), "--overwrite", "--yes"])
    require_ok(child, "our workflow")
    memory = read_json(run_dir / "memory.json")["entries"]
    result = memory["training.result"]
    stats = memory.get("dataset.stats") or {}
    return {
        "wall_seconds": child.wall_seconds,
        "cpu_seconds": child.cpu_seconds,
        "peak_rss_bytes": child.peak_rss_bytes,
        "train_seconds": result["train_seconds"],
        "steps": result["steps"],
        "trained_tokens": result["trained_tokens"],
        "losses": [record["loss"] for record in result["log_history"] if "loss" in record],
        "average_train_loss": result["average_train_loss"],
        "train_rows": stats.get("train_rows"),
        "truncated": (stats.get("train") or {}).get("truncated") if isinstance(stats.get("train"), dict) else None,
        "gradient_checkpointing": result["gradient_checkpointing"],
    }


def run_trl(job: PreferenceJob, model_dir: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "trl-result.json"
    command = [PYTHON, TRL_JOB, "--model", str(model_dir), "--data", str(job.trl_file), "--result", str(result_path)]
    command += ["--batch-size", str(job.batch_size), "--max-length", str(job.max_length)]
    command += ["--max-steps", str(job.steps), "--learning-rate", str(job.learning_rate)]
    if job.precision == "bf16":
        command.append("--bf16")
    # A fresh datasets cache: TRL tokenizes in every run, as ours does with its fresh cache.
    child = run_child(command, env={"HF_DATASETS_CACHE": str(work / "datasets-cache")})
    require_ok(child, "the TRL DPO script")
    return {
        "wall_seconds": child.wall_seconds,
        "cpu_seconds": child.cpu_seconds,
        "peak_rss_bytes": child.peak_rss_bytes,
        **read_json(result_path),
    }


def cpu_bf16_flags() -> str:
    """Which of avx512_bf16, amx_bf16 and amx_tile /proc/cpuinfo lists (what decides bf16 here)."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return ""
    return ", ".join(flag for flag in ("avx512_bf16", "amx_bf16", "amx_tile") if flag in flags)


def final_loss(result: dict) -> float:
    """The mean of the last five steps' losses: one step's loss is one batch's."""
    tail = result["losses"][-5:]
    return sum(tail) / len(tail) if tail else float("nan")


def summary_line(result: dict) -> str:
    return (
        f"{result['steps']} steps, {result['trained_tokens']} trained tokens, train {result['train_seconds']:.1f} s, "
        f"process {result['wall_seconds']:.1f} s (CPU {result['cpu_seconds']:.1f} s), final loss {final_loss(result):.4f}, "
        f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, load {result['load']}"
    )


def render(job: PreferenceJob, results: dict[str, list[dict]], fitting: int, args, load_start, load_end) -> str:
    medians = {
        side: {
            "wall": median([r["wall_seconds"] for r in runs]),
            "cpu": median([r["cpu_seconds"] for r in runs]),
            "train": median([r["train_seconds"] for r in runs]),
            "rss": median([r["peak_rss_bytes"] for r in runs]),
            "steps": runs[0]["steps"],
            "tokens": runs[0]["trained_tokens"],
            "loss": median([final_loss(r) for r in runs]),
            "average": median([r["average_train_loss"] for r in runs]),
            "first": runs[0]["losses"][0] if runs[0]["losses"] else float("nan"),
        }
        for side, runs in results.items()
    }
    ours, trl = medians["ours"], medians["trl"]
    rows = []
    for side, label in (("ours", "ours (entity-train run, preference_training)"), ("trl", "TRL DPOTrainer")):
        m = medians[side]
        rows.append(
            [
                label,
                m["steps"],
                m["tokens"],
                f"{m['first']:.4f}",
                f"{m['loss']:.4f}",
                f"{m['average']:.4f}",
                f"{m['wall']:.1f}",
                f"{m['train']:.1f}",
                f"{m['cpu']:.1f}",
                f"{m['steps'] / m['wall']:.3f}",
                f"{m['tokens'] / m['wall']:.0f}",
                f"{m['tokens'] / m['train']:.0f}",
                f"{m['rss'] / 2**20:.0f}",
            ]
        )
    headers = [
        "side",
        "steps",
        "trained tokens",
        "loss step 1",
        "final loss (last 5 steps)",
        "average loss",
        "end to end s",
        "training s",
        "process CPU s",
        "steps/s (end to end)",
        "trained tok/s (end to end)",
        "trained tok/s (training)",
        "peak RSS MiB",
    ]
    step_gap = max(
        (
            abs(a - b)
            for o, t in zip(results["ours"], results["trl"], strict=True)
            for a, b in zip(o["losses"], t["losses"], strict=False)
        ),
        default=float("nan"),
    )
    per_round = [
        f"- round {i + 1}: ours {o['wall_seconds']:.1f} s (load {o['load']}), TRL {t['wall_seconds']:.1f} s "
        f"(load {t['load']}): {t['wall_seconds'] / o['wall_seconds']:.2f}x"
        for i, (o, t) in enumerate(zip(results["ours"], results["trl"], strict=True))
    ]
    lines = [
        f"## Preference (DPO): ours vs TRL DPOTrainer, `{model_label(job.model)}` (benchmarks/preference.py)",
        "",
        f"Job: `{job.model}`, the first {job.pairs} pairs of {DATASET} whose chosen and rejected conversations fit "
        f"{job.max_length} tokens ({fitting} of 300 do; so neither side truncates), {job.steps} steps of "
        f"{job.batch_size} pairs, LoRA r16/alpha 32/dropout 0 all-linear, DPO beta 0.1, reference = adapter "
        f"disabled, lr {job.learning_rate} cosine, seed 0, {job.precision} on both sides (TRL: bf16={job.precision == 'bf16'}, "
        "use_cpu=True), gradient checkpointing off on both (DPOConfig defaults it on). Medians of "
        f"{args.repeats} alternating round(s), each run a fresh process from the data file to the saved adapter "
        "(tokenization included: fresh caches).",
        "",
        markdown_table(headers, rows),
        "",
        f"- **ours/TRL end to end: {trl['wall'] / ours['wall']:.2f}x** (target >= 1.5x); training loop only: "
        f"{trl['train'] / ours['train']:.2f}x; process CPU seconds: {trl['cpu'] / ours['cpu']:.2f}x",
        f"- peak RSS ours/TRL: {ours['rss'] / trl['rss']:.2f} ({ours['rss'] / 2**20:.0f} vs {trl['rss'] / 2**20:.0f} MiB)",
        f"- final loss (mean of the last 5 steps) ours {ours['loss']:.4f} vs TRL {trl['loss']:.4f}; largest "
        f"difference of one step's loss between the two sides: {step_gap:.4f} (only meaningful when both draw the pairs in the same order; see the notes)",
        *per_round,
        "",
        "### Machine",
        "",
        f"- CPU flags for native bf16: {cpu_bf16_flags() or 'none (bf16 is emulated: fp32 chosen)'}",
        machine_lines(machine_info(), load_start, load_end),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
