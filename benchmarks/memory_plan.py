"""The memory plan's prediction against the measured peak, for full, LoRA and QLoRA at two
sequence lengths, each configuration in a fresh process (benchmarks/memory_probe.py).

    python benchmarks/memory_plan.py [--model smollm2-135m-instruct] [--methods full,lora,qlora]
        [--lengths 256,512] [--batches 8] [--precision fp32] [--steps 3] [--checkpointing off]
    python benchmarks/memory_plan.py --small    # built-in `small`: batches 2,4 (fast)
    python benchmarks/memory_plan.py --quick    # smoke test: tiny model, LoRA, length 64, batch 2

The default is the real model (SmolLM2-135M-Instruct) at the throughput job's micro-batch.
Measured: peak RSS increase over the process just before the model loads (CPU), or
``torch.cuda.max_memory_allocated`` (GPU). Target: every prediction within 15%. Each model and
precision writes its own section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

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
    model_folder,
    model_label,
    require_ok,
    run_child,
    write_section,
)

PROBE = str(REPO / "benchmarks" / "memory_probe.py")
TARGET = 0.15


REAL_MODEL = "smollm2-135m-instruct"
PRESETS = {
    "real": {"model": REAL_MODEL, "methods": "full,lora,qlora", "lengths": "256,512", "batches": "8"},
    "small": {"model": "small", "methods": "full,lora,qlora", "lengths": "256,512", "batches": "2,4"},
    "quick": {"model": "tiny", "methods": "lora", "lengths": "64", "batches": "2"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"registry name, built-in or folder (default {REAL_MODEL})")
    parser.add_argument("--small", action="store_true", help="the built-in small at batches 2 and 4 (fast)")
    parser.add_argument("--methods", default=None, help="comma-separated training methods (full,lora,qlora)")
    parser.add_argument("--lengths", default=None, help="comma-separated sequence lengths (256,512)")
    parser.add_argument("--batches", default=None, help="comma-separated micro-batch sizes (8; --small 2,4)")
    parser.add_argument("--precision", default="fp32", help="training_config precision: fp32, bf16 or auto")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration (at least 2)")
    parser.add_argument("--checkpointing", default="off", help="gradient checkpointing: off, on or off,on")
    parser.add_argument(
        "--keep", default=None, help="folder of probe results: a configuration measured there before is not rerun"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, LoRA, length 64, batch 2")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    fill_from_preset(args, PRESETS)
    if args.quick:
        args.steps, args.no_write = 2, True
    return args


def utc_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def measure(
    model: str,
    method: str,
    length: int,
    batch: int,
    precision: str,
    steps: int,
    checkpointing: str,
    keep: str | None = None,
) -> dict:
    kept = None
    if keep:
        name = f"{model_label(model)}-{method}-{length}x{batch}-{precision}-{steps}steps-checkpointing-{checkpointing}"
        kept = Path(keep) / f"{name}.json"
        if kept.is_file():
            # The measurement is kept; the prediction is the current plan's.
            from benchmarks.memory_probe import probe_config
            from plugins.training.memory_plan import plan_for_config

            config = probe_config(model, method, batch, precision, steps, checkpointing == "on")
            plan = plan_for_config(config, length)
            figures = json.loads(kept.read_text(encoding="utf-8"))
            figures.setdefault("measured_at", utc_time(kept.stat().st_mtime))
            return {**figures, "estimate": plan.peak_bytes, "components": plan.components, "kept": True}
    work = Path(tempfile.mkdtemp(prefix="memory-plan-bench-"))
    command = [PYTHON, PROBE, model, method, str(length), str(batch), str(work), precision, str(steps), checkpointing]
    child = run_child(command)
    require_ok(child, f"the memory probe ({method}, length {length}, batch {batch})")
    line = next(line for line in child.output.splitlines() if line.startswith("RESULT "))
    result = {
        **json.loads(line.removeprefix("RESULT ")),
        "wall_seconds": child.wall_seconds,
        "load": load_average(),
        "measured_at": utc_time(time.time()),
    }
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(result), encoding="utf-8")
    return result


def main() -> None:
    args = parse_args()
    load_start = load_average()
    print(f"load average at start: {load_start}")
    model_folder(args.model)  # builds a built-in, or converts a registry GGUF, once before any probe
    rows, worst, precisions, details = [], 0.0, set(), []
    for method in args.methods.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            for batch in (int(x) for x in args.batches.split(",")):
                for checkpointing in args.checkpointing.split(","):
                    figures = measure(
                        args.model, method, length, batch, args.precision, args.steps, checkpointing, args.keep
                    )
                    precisions.add(figures.get("precision", args.precision))
                    error = figures["estimate"] / figures["measured"] - 1
                    worst = max(worst, abs(error))
                    rows.append(
                        [
                            method,
                            length,
                            batch,
                            checkpointing,
                            f"{figures['estimate'] / 2**20:.0f}",
                            f"{figures['measured'] / 2**20:.0f}",
                            f"{100 * error:+.0f}%",
                            "yes" if abs(error) <= TARGET else "**no**",
                            f"{figures['measured_at'][11:]}, load {figures.get('load', '?').split()[0]}"
                            + (" (kept)" if figures.get("kept") else ""),
                        ]
                    )
                    parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in figures["components"].items() if v)
                    details.append(f"- {method} {length}x{batch}, checkpointing {checkpointing}: {parts} MiB")
                    print(
                        " | ".join(str(cell) for cell in rows[-1]) + f" ({figures['wall_seconds']:.0f} s)", flush=True
                    )
    load_end = load_average()
    print(f"load average at end: {load_end}")
    precision = ", ".join(sorted(precisions))
    report = "\n".join(
        [
            f"## Memory plan vs measured peak, `{model_label(args.model)}` in {precision} (benchmarks/memory_plan.py)",
            "",
            f"Model `{args.model}`, precision {args.precision} (resolved: {precision}) on CPU, full packed rows "
            f"(two samples each), LoRA r16 all-linear without dropout, {args.steps} steps, each configuration a "
            "fresh process. Measured = peak RSS increase over the process just before the model loads (after "
            'the imports). "kept": measured by an earlier run of this script (--keep), one probe at a time; the '
            "prediction is the current plan's. Peak RSS does not depend on the machine's load.",
            "",
            markdown_table(
                [
                    "method",
                    "length",
                    "batch",
                    "checkpointing",
                    "predicted MiB",
                    "measured MiB",
                    "error",
                    "within 15%",
                    "measured at (1-min load)",
                ],
                rows,
            ),
            "",
            f"Worst error: {100 * worst:.0f}% (target 15%).",
            *components_and_machine(details, load_start, load_end),
        ]
    )
    print(report)
    if not args.no_write:
        write_section(f"memory_plan-{model_label(args.model)}-{args.precision}", report)


def components_and_machine(details: list[str], load_start: str, load_end: str) -> list[str]:
    """The tail of a memory benchmark's section: the plan's components per run, then the machine."""
    return [
        "",
        "The plan's components (MiB):",
        "",
        *details,
        "",
        "### Machine",
        "",
        machine_lines(machine_info(), load_start, load_end),
    ]


if __name__ == "__main__":
    main()
