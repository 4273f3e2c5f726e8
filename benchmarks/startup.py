"""Start-up costs: ``entity-train --help``, ``import entity_training``, and the time from command
start to the first optimizer step, cold and with a warm preprocessing cache, ours vs TRL (b).

    python benchmarks/startup.py [--repeats 2] [--rows 32] [--quick]

Cold: an empty tokenized-data cache (ours) / an empty HF datasets cache (TRL). Warm: the same
command again with that cache filled. The first step is the first ``progress`` event of the
``training`` task in our events.jsonl, and TRL's first ``on_step_end`` callback, both relative to
the moment the process was spawned. Every measurement is a fresh process; medians are reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    PYTHON,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    require_dataset,
    require_ok,
    run_child,
    write_section,
)
from benchmarks.jobs import ENTITY_TRAIN, Job, run_ours, run_trl, write_trl_rows  # noqa: E402
from plugins.training.device import cpu_supports_bf16  # noqa: E402

IMPORT_TIMER = "import time; t = time.perf_counter(); import entity_training; print(time.perf_counter() - t)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds (each: cold and warm, ours and TRL)")
    parser.add_argument("--rows", type=int, default=32, help="Alpaca rows of the job")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, 8 rows, 1 round")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.rows, args.repeats, args.no_write = 8, 1, True
    model = "tiny" if args.quick else "small"
    load_start = load_average()
    print(f"load average at start: {load_start}")
    help_seconds, import_seconds = [], []
    for _ in range(max(args.repeats, 3)):
        child = run_child([ENTITY_TRAIN, "--help"])
        require_ok(child, "entity-train --help")
        help_seconds.append(child.wall_seconds)
        child = run_child([PYTHON, "-c", IMPORT_TIMER])
        require_ok(child, "import entity_training")
        import_seconds.append(float(child.output.strip().splitlines()[-1]))
    print(f"entity-train --help {median(help_seconds):.3f} s, import entity_training {median(import_seconds):.3f} s")

    from plugins.models.builtin import ensure_builtin

    model_dir = ensure_builtin(model)
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    job = Job(dataset=require_dataset("alpaca_en_demo.json"), rows=args.rows, model=model, max_steps=1)
    rows_path = work / "rows.jsonl"
    write_trl_rows(job, rows_path)
    # Each side in both precisions: fp32 (TRL's careful variant (b)) and our default / TRL's bf16,
    # which differ on a CPU with native bf16 (precision auto picks bf16 there).
    sides = ("ours", "ours auto", "TRL", "TRL bf16")
    first_steps: dict[str, list[float]] = {f"{side} {state}": [] for side in sides for state in ("cold", "warm")}
    for round_index in range(args.repeats):
        order = sides if round_index % 2 == 0 else tuple(reversed(sides))
        for side in order:
            cache = work / f"{side.replace(' ', '-')}-cache-{round_index}"
            for state in ("cold", "warm"):
                folder = work / f"{side.replace(' ', '-')}-{state}-{round_index}"
                if side.startswith("ours"):
                    precision = "auto" if side == "ours auto" else "fp32"
                    result = run_ours(replace(job, precision=precision), folder, cache_dir=cache)
                else:
                    bf16 = side == "TRL bf16"
                    result = run_trl(
                        job,
                        model_dir,
                        rows_path,
                        folder,
                        packing=True,
                        fp32=not bf16,
                        use_cpu=bf16,
                        gradient_checkpointing=None,
                        batch_size=job.batch_size,
                        max_steps=1,
                        env={"HF_DATASETS_CACHE": str(cache)},
                    )
                first_steps[f"{side} {state}"].append(result["first_step_seconds"])
                print(f"round {round_index + 1} {side} {state}: first step at {result['first_step_seconds']:.1f} s")
    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(args, model, help_seconds, import_seconds, first_steps, load_start, load_end)
    print(report)
    if not args.no_write:
        write_section("startup", report)


def render(args, model, help_seconds, import_seconds, first_steps, load_start, load_end) -> str:
    ttfs = {name: median(values) for name, values in first_steps.items()}
    rows = [
        ["`entity-train --help` (process)", f"{median(help_seconds):.3f} s", "< 0.5 s"],
        ["`import entity_training` (in-process)", f"{median(import_seconds):.3f} s", "< 0.1 s"],
    ]
    for name, value in ttfs.items():
        rows.append([f"time to first optimizer step, {name}", f"{value:.1f} s", ""])
    for ours, trl, target in (
        ("ours", "TRL", "<= 0.5"),
        ("ours auto", "TRL", "<= 0.5"),
        ("ours auto", "TRL bf16", ""),
    ):
        rows.append([f"{ours} warm / {trl} warm", f"{ttfs[f'{ours} warm'] / ttfs[f'{trl} warm']:.2f}", target])
    return "\n".join(
        [
            "## Start-up (benchmarks/startup.py)",
            "",
            f"Job: the throughput job (built-in `{model}`, {args.rows} Alpaca rows, length 512, LoRA r16, batch 8) "
            'stopped after its first optimizer step; TRL is variant (b) (packing, fp32). "ours" trains in fp32 '
            'like it; "ours auto" with our default precision (bf16 on a CPU with native bf16, else fp32) and '
            '"TRL bf16" is (b) with SFTConfig\'s bf16 (+ use_cpu=True). This CPU has native bf16: '
            f"{'yes' if cpu_supports_bf16() else 'no'}. Medians of {args.repeats} alternating rounds, each a fresh "
            "process.",
            "",
            markdown_table(["measure", "median", "target"], rows),
            "",
            "### Machine",
            "",
            machine_lines(machine_info(), load_start, load_end),
        ]
    )


if __name__ == "__main__":
    main()
