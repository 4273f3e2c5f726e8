"""The same LoRA job four ways, alternating, repeated, medians: ours against TRL's SFTTrainer.

(a) ours: dataset_loader -> training_config -> data_preparation -> fine_tuning via ``entity-train run``;
(b) TRL careful: packing=True (BFD, padding-free), bf16=False/fp16=False, LoRA r16 all-linear,
    everything else SFTConfig's default (gradient checkpointing stays on);
(c) TRL packing off (its default), fp32, gradient checkpointing default (on);
(d) TRL as it comes: packing off, SFTConfig's default precision (bf16) and checkpointing, plus
    use_cpu=True: without it TrainingArguments refuses bf16 on a CPU ("Your setup doesn't support
    bf16/gpu. You need to assign use_cpu ..."), so TRL as it comes does not start on a CPU at all;
    bf16 autocast is ~10x slower on CPUs without native bf16, so it trains only --slow-steps
    steps (tokens/s is what compares);
(e) TRL careful with gradient_checkpointing=False (to separate checkpointing from the rest);
(f) ours with precision auto (our default: bf16 on a CPU with native bf16 maths, else fp32) and
(g) TRL careful with bf16 + use_cpu=True: the pair to compare on such a CPU.
(a)-(c) and (e) train in fp32 on every machine, so that they compare like for like.
Plus: full fine-tuning of ours for the MFU against the measured fp32 matmul peak, and a check
of whether each packed variant keeps samples from attending to each other.

    python benchmarks/throughput.py [--rows 200] [--repeats 1] [--variants a,b,c,d,f,g] [--quick]

The default is the issue's job (200 Alpaca rows, ~20 steps), so that start-up does not dominate
end to end, in one round of a-d plus 5 steps of full fine-tuning: about 8 minutes on an idle
2-core machine. ``--repeats 3 --variants a,b,c,d,e`` for medians (about 35 minutes).

Same model (built-in ``small``), data (first --rows rows of alpaca_en_demo.json), max_seq_length
512, LoRA r16/alpha 32/dropout 0 on all linear layers, lr 2e-4, one epoch. Tokens per batch
match: 8 packed rows of <= 512 tokens, or for unpacked variants round(8*512 / mean sample
length) samples. Trained tokens are counted on both sides as labels != -100 per micro-batch.
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
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    matmul_peak_gflops,
    median,
    require_dataset,
    write_section,
)
from benchmarks.flops import training_flops  # noqa: E402
from benchmarks.isolation import isolation_report  # noqa: E402
from benchmarks.jobs import Job, mean_sample_tokens, run_ours, run_trl, write_trl_rows  # noqa: E402
from plugins.training.device import cpu_supports_bf16 as cpu_has_bf16  # noqa: E402

VARIANTS = {
    "a": "ours (workflow, packed, block-diagonal mask, fp32)",
    "b": "TRL careful: packing, fp32, LoRA all-linear",
    "c": "TRL packing off, fp32",
    "d": "TRL as it comes (bf16 default) + use_cpu=True",
    "e": "TRL careful + gradient_checkpointing=False",
    "f": "ours, precision auto",
    "g": "TRL careful, bf16 + use_cpu=True",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200, help="Alpaca rows trained (one epoch)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians are reported")
    parser.add_argument("--variants", default="a,b,c,d", help="comma-separated subset of a,b,c,d,e,f,g")
    parser.add_argument("--slow-steps", type=int, default=2, help="step budget of variant (d)")
    parser.add_argument("--full-steps", type=int, default=5, help="steps of the full fine-tuning run (MFU)")
    parser.add_argument("--no-full", action="store_true", help="skip the full fine-tuning run for the MFU")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, 8 rows, 1 round, a and b")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.rows, args.repeats, args.variants, args.no_full, args.no_write = 8, 1, "a,b", True, True
    model_name = "tiny" if args.quick else "small"
    load_start = load_average()
    print(f"load average at start: {load_start}")
    from plugins.models import load_tokenizer
    from plugins.models.builtin import ensure_builtin

    dataset = require_dataset("alpaca_en_demo.json")
    model_dir = ensure_builtin(model_name)
    tokenizer = load_tokenizer(model_name)
    work = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    job = Job(dataset=dataset, rows=args.rows, model=model_name)
    rows_path = work / "rows.jsonl"
    rows = write_trl_rows(job, rows_path)
    unpacked_batch = max(1, round(job.batch_size * job.max_length / mean_sample_tokens(rows, tokenizer)))
    print(f"{args.rows} rows; unpacked variants use batch {unpacked_batch} (same tokens per batch)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_index in range(args.repeats):
        order = variants if round_index % 2 == 0 else list(reversed(variants))
        for variant in order:
            result = run_variant(
                variant, job, model_dir, rows_path, work / f"{variant}-{round_index}", unpacked_batch, args
            )
            results[variant].append(result)
            print(f"round {round_index + 1} {variant}: {summary_line(result)}", flush=True)
    full = None
    if not args.no_full:
        full_job = Job(
            dataset=dataset,
            rows=args.rows,
            model=model_name,
            method="full",
            learning_rate=5e-5,
            # Without (a) there is no epoch to scale the FLOPs by: the full run then trains the epoch.
            max_steps=args.full_steps if "a" in variants else None,
        )
        full = run_ours(full_job, work / "full")
        print(f"ours, full fine-tuning: {summary_line(full)}")
    peak = matmul_peak_gflops()
    isolation = isolation_report(model_dir, rows[:2], job.max_length)
    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(job, results, unpacked_batch, args, full, peak, isolation, tokenizer, rows, load_start, load_end)
    print(report)
    if not args.no_write:
        write_section("throughput", report)


def run_variant(
    variant: str, job: Job, model_dir: Path, rows_path: Path, work: Path, unpacked_batch: int, args
) -> dict:
    if variant == "a":
        return run_ours(job, work)
    if variant == "f":
        return run_ours(replace(job, precision="auto"), work)
    settings = {
        "b": {"packing": True, "fp32": True, "gradient_checkpointing": None, "batch_size": job.batch_size},
        "c": {"packing": False, "fp32": True, "gradient_checkpointing": None, "batch_size": unpacked_batch},
        # As it comes, SFTConfig's bf16 is refused on a CPU; use_cpu=True is the one change its error asks for.
        "d": {
            "packing": False,
            "fp32": False,
            "gradient_checkpointing": None,
            "batch_size": unpacked_batch,
            "use_cpu": True,
        },
        "e": {"packing": True, "fp32": True, "gradient_checkpointing": False, "batch_size": job.batch_size},
        "g": {
            "packing": True,
            "fp32": False,
            "gradient_checkpointing": None,
            "batch_size": job.batch_size,
            "use_cpu": True,
        },
    }[variant]
    max_steps = args.slow_steps if variant == "d" else None
    return run_trl(job, model_dir, rows_path, work, max_steps=max_steps, **settings)


def tokens_per_second(result: dict) -> float:
    return result["trained_tokens"] / result["train_seconds"]


def end_to_end_tokens_per_second(result: dict) -> float:
    return result["trained_tokens"] / result["wall_seconds"]


def summary_line(result: dict) -> str:
    return (
        f"{result['trained_tokens']} trained tokens, {result['steps']} steps, train {result['train_seconds']:.1f} s, "
        f"process {result['wall_seconds']:.1f} s (CPU {result['cpu_seconds']:.1f} s), {tokens_per_second(result):.0f} tok/s, "
        f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB"
    )


def render(job, results, unpacked_batch, args, full, peak, isolation, tokenizer, rows, load_start, load_end) -> str:
    medians = {
        v: {
            "tps": median([tokens_per_second(r) for r in rs]),
            "e2e": median([end_to_end_tokens_per_second(r) for r in rs]),
            "wall": median([r["wall_seconds"] for r in rs]),
            "cpu": median([r["cpu_seconds"] for r in rs]),
            "train": median([r["train_seconds"] for r in rs]),
            "rss": median([r["peak_rss_bytes"] for r in rs]),
            "tokens": rs[0]["trained_tokens"],
            "steps": rs[0]["steps"],
        }
        for v, rs in results.items()
        if rs
    }
    ours = medians.get("a")
    table_rows = []
    for variant, m in medians.items():
        # TRL in bf16 (g) is compared with ours in our default precision (f), the rest with (a).
        mine = medians.get("f") if variant == "g" else ours
        own = variant in ("a", "f")
        train_ratio = f"{mine['tps'] / m['tps']:.2f}x" if mine and not own else "-"
        e2e_ratio = f"{mine['e2e'] / m['e2e']:.2f}x" if mine and not own and variant != "d" else "-"
        memory_ratio = f"{mine['rss'] / m['rss']:.2f}" if mine and not own else "-"
        table_rows.append(
            [
                f"({variant}) {VARIANTS[variant]}",
                m["steps"],
                m["tokens"],
                f"{m['train']:.1f}",
                f"{m['wall']:.1f}",
                f"{m['cpu']:.1f}",
                f"{m['tokens'] / m['cpu']:.0f}",
                f"{m['tps']:.0f}",
                f"{m['e2e']:.0f}",
                f"{m['rss'] / 2**20:.0f}",
                train_ratio,
                e2e_ratio,
                memory_ratio,
            ]
        )
    headers = [
        "variant",
        "steps",
        "trained tokens",
        "train s",
        "process s",
        "process CPU s",
        "trained tok per CPU s",
        "trained tok/s (training)",
        "trained tok/s (process)",
        "peak RSS MiB",
        "ours/x training",
        "ours/x end to end",
        "RSS ours/x",
    ]
    lines = [
        "## Throughput: ours vs TRL SFTTrainer (benchmarks/throughput.py)",
        "",
        f"Job: built-in `{job.model}`, first {job.rows} rows of alpaca_en_demo.json, one epoch, max_seq_length "
        f"{job.max_length}, LoRA r16/alpha 32/dropout 0 on all linear layers, lr {job.learning_rate}, 8 packed rows "
        f"of <= {job.max_length} tokens per step (unpacked variants: {unpacked_batch} samples per step, the same "
        f"tokens per batch). Medians of {args.repeats} alternating rounds; every run a fresh process. "
        f"(d) is budget-limited: it trains only {args.slow_steps} step(s) (bf16 autocast is far slower on a CPU "
        'without native bf16), so compare its tokens/s, not its times. "ours" is (a) for every row except (g), '
        f"which is compared with (f). This CPU has native bf16: {'yes' if cpu_has_bf16() else 'no'}.",
        "",
        markdown_table(headers, table_rows),
        "",
    ]
    if full is not None:
        flops = training_flops(job, tokenizer, rows, method="full")
        # The full run may stop after a few steps: count the share of the epoch's tokens it trained.
        share = full["trained_tokens"] / ours["tokens"] if ours and full["steps"] < ours["steps"] else 1.0
        achieved = flops["total"] * share / full["train_seconds"] / 1e9
        lora = training_flops(job, tokenizer, rows, method="lora")
        lora_rate = lora["total"] / ours["train"] / 1e9 if ours else float("nan")
        lines += [
            "### Hardware limit",
            "",
            f"- fp32 `torch.mm` peak (2048x2048, every torch thread, best of 10): **{peak:.1f} GFLOP/s**",
            f"- ours, full fine-tuning of `{job.model}` at length {job.max_length}: {full['train_seconds']:.1f} s for "
            f"{full['steps']} steps, {achieved:.1f} GFLOP/s = **MFU {100 * achieved / peak:.0f}%** "
            f"(6*N per processed token, N = {flops['params']:,} matmul parameters, + causal attention within each sample)",
            f"- ours, LoRA: {lora_rate:.1f} GFLOP/s = MFU {100 * lora_rate / peak:.0f}% (4*N per token: forward and "
            "activation gradients, + LoRA's own 6*N_lora, + attention)",
            "",
        ]
    lines += ["### Sample isolation in packed rows", "", *[f"- {line}" for line in isolation], ""]
    lines += ["### Machine", "", machine_lines(machine_info(), load_start, load_end)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
