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
    first_steps: dict[str, list[float]] = {"ours cold": [], "ours warm": [], "TRL cold": [], "TRL warm": []}
    for round_index in range(args.repeats):
        sides = ("ours", "TRL") if round_index % 2 == 0 else ("TRL", "ours")
        for side in sides:
            cache = work / f"{side}-cache-{round_index}"
            for state in ("cold", "warm"):
                folder = work / f"{side}-{state}-{round_index}"
                if side == "ours":
                    result = run_ours(job, folder, cache_dir=cache)
                else:
                    result = run_trl(
                        job,
                        model_dir,
                        rows_path,
                        folder,
                        packing=True,
                        fp32=True,
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
    warm_ratio = ttfs["ours warm"] / ttfs["TRL warm"]
    rows.append(["ours warm / TRL warm", f"{warm_ratio:.2f}", "<= 0.5"])
    return "\n".join(
        [
            "## Start-up (benchmarks/startup.py)",
            "",
            f"Job: the throughput job (built-in `{model}`, {args.rows} Alpaca rows, length 512, LoRA r16, batch 8) "
            "stopped after its first optimizer step; TRL is variant (b) (packing, fp32). Medians of "
            f"{args.repeats} alternating rounds, each a fresh process.",
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
