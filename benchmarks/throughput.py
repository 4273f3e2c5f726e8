"""The same LoRA job several ways, alternating, repeated, medians: ours against TRL's SFTTrainer.

(a) ours: dataset_loader -> training_config -> data_preparation -> memory_plan -> fine_tuning via
    ``entity-train run``
    (gradient checkpointing "auto", our default: on only when the memory plan says it must be);
(b) TRL careful: packing=True (BFD, padding-free), bf16=False/fp16=False, LoRA r16 all-linear,
    everything else SFTConfig's default (gradient checkpointing stays on);
(c) TRL packing off (its default), fp32, gradient checkpointing default (on);
(d) TRL as it comes: packing off, SFTConfig's default precision (bf16) and checkpointing, plus
    use_cpu=True: without it TrainingArguments refuses bf16 on a CPU ("Your setup doesn't support
    bf16/gpu. You need to assign use_cpu ..."), so TRL as it comes does not start on a CPU at all;
    bf16 autocast is ~10x slower on CPUs without native bf16, so it trains only --slow-steps
    steps (tokens/s is what compares);
(e) TRL careful with gradient_checkpointing=False (to separate checkpointing from the rest);
(f) ours with precision auto (our default: bf16 on a CPU with native bf16, else fp32) and
(g) TRL careful with bf16 + use_cpu=True: the pair to compare on such a CPU;
(h) ours with gradient checkpointing on: the memory-matched pair of (b), which checkpoints too.
(a)-(c), (e) and (h) train in fp32 on every machine, so that they compare like for like.
Plus: full fine-tuning of ours for the MFU against the measured fp32 matmul peak, and a check
of whether each packed variant keeps samples from attending to each other.

    python benchmarks/throughput.py [--model smollm2-135m-instruct] [--rows 64] [--variants a,b,h]
        [--steps N] [--repeats 1] [--full-steps 3] [--no-full] [--no-write]
    python benchmarks/throughput.py --small     # the earlier job: built-in `small`, 200 rows, a,b,c,d
    python benchmarks/throughput.py --quick     # smoke test: built-in `tiny`, 8 rows, a and b

The default is the issue's job on the real model: SmolLM2-135M-Instruct (registry name
``smollm2-135m-instruct``; TRL gets the same converted Hugging Face folder), the first 64 Alpaca
rows (one epoch: 4 steps of 8 packed rows), (a), (b) and (h) once, plus 3 steps of full
fine-tuning. ``--small`` keeps the earlier, faster job on the built-in `small` (fast smoke runs
of the whole comparison on a 10M-parameter model). Each model writes its own section of RESULTS.md.

Same model, data (first --rows rows of alpaca_en_demo.json, in file order, none held out for
validation on either side), max_seq_length 512, LoRA r16/alpha 32/dropout 0 on all linear
layers, lr 2e-4, one epoch (or --steps). Tokens per batch match: 8 packed rows of <= 512 tokens,
or for unpacked variants round(8*512 / mean sample length) samples. Trained tokens are counted on
both sides as labels != -100 per micro-batch.
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
    fill_from_preset,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    matmul_peak_gflops,
    median,
    model_folder,
    model_label,
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
    "h": "ours + gradient checkpointing (memory-matched to b)",
}
REAL_MODEL = "smollm2-135m-instruct"
# What each preset leaves to its own flags: the real model's issue job, the earlier `small` job, the smoke test.
PRESETS = {
    "real": {"model": REAL_MODEL, "rows": 64, "variants": "a,b,h", "full_steps": 3},
    "small": {"model": "small", "rows": 200, "variants": "a,b,c,d", "full_steps": 5},
    "quick": {"model": "tiny", "rows": 8, "variants": "a,b", "full_steps": 1},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"registry name, built-in or folder (default {REAL_MODEL})")
    parser.add_argument("--small", action="store_true", help="the earlier job: built-in small, 200 rows, a,b,c,d")
    parser.add_argument("--rows", type=int, default=None, help="Alpaca rows trained (64; --small 200)")
    parser.add_argument(
        "--steps", type=int, default=None, help="stop both sides after this many steps (default: one epoch)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians are reported")
    parser.add_argument("--variants", default=None, help="comma-separated subset of a,b,c,d,e,f,g,h")
    parser.add_argument("--slow-steps", type=int, default=2, help="step budget of variant (d)")
    parser.add_argument("--full-steps", type=int, default=None, help="steps of the full fine-tuning run (MFU)")
    parser.add_argument("--no-full", action="store_true", help="skip the full fine-tuning run for the MFU")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, 8 rows, 1 round, a and b")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    fill_from_preset(args, PRESETS)
    if args.quick:
        args.repeats, args.no_full, args.no_write = 1, True, True
    return args


def main() -> None:
    args = parse_args()
    model_name = args.model
    load_start = load_average()
    print(f"load average at start: {load_start}")
    from plugins.models import load_tokenizer

    dataset = require_dataset("alpaca_en_demo.json")
    model_dir = model_folder(model_name)  # converts a registry GGUF once, before anything is timed
    tokenizer = load_tokenizer(model_name)
    work = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    job = Job(dataset=dataset, rows=args.rows, model=model_name, max_steps=args.steps)
    rows_path = work / "rows.jsonl"
    rows = write_trl_rows(job, rows_path)
    unpacked_batch = max(1, round(job.batch_size * job.max_length / mean_sample_tokens(rows, tokenizer)))
    print(
        f"{model_name} ({model_dir}): {args.rows} rows; unpacked variants use batch {unpacked_batch} (same tokens per batch)"
    )
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
        full_job = replace(job, method="full", learning_rate=5e-5, max_steps=args.full_steps)
        full = run_ours(full_job, work / "full")
        print(f"ours, full fine-tuning: {summary_line(full)}", flush=True)
    peak = matmul_peak_gflops()
    isolation = isolation_report(model_dir, rows[:2], job.max_length)
    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(job, results, unpacked_batch, args, full, peak, isolation, tokenizer, rows, load_start, load_end)
    print(report)
    if not args.no_write:
        write_section(f"throughput-{model_label(model_name)}", report)


def run_variant(
    variant: str, job: Job, model_dir: Path, rows_path: Path, work: Path, unpacked_batch: int, args
) -> dict:
    if variant == "a":
        return run_ours(job, work)
    if variant == "f":
        return run_ours(replace(job, precision="auto"), work)
    if variant == "h":
        return run_ours(replace(job, gradient_checkpointing=True), work)
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
            "samples": rs[0].get("train_rows"),
            "checkpointing": rs[0].get("gradient_checkpointing"),
            "loss": rs[0].get("train_loss"),
        }
        for v, rs in results.items()
        if rs
    }
    ours = medians.get("a")
    table_rows = []
    for variant, m in medians.items():
        # TRL in bf16 (g) is compared with ours in our default precision (f), the rest with (a).
        mine = medians.get("f") if variant == "g" else ours
        own = variant in ("a", "f", "h")
        train_ratio = f"{mine['tps'] / m['tps']:.2f}x" if mine and not own else "-"
        e2e_ratio = f"{mine['e2e'] / m['e2e']:.2f}x" if mine and not own and variant != "d" else "-"
        memory_ratio = f"{mine['rss'] / m['rss']:.2f}" if mine and not own else "-"
        table_rows.append(
            [
                f"({variant}) {VARIANTS[variant]}",
                m["samples"] if m["samples"] is not None else "?",
                m["steps"],
                m["tokens"],
                "on" if m["checkpointing"] else "off",
                f"{m['loss']:.4f}" if m["loss"] is not None else "-",
                f"{m['train']:.1f}",
                f"{m['wall']:.1f}",
                f"{m['cpu']:.1f}",
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
        "samples",
        "steps",
        "trained tokens",
        "grad. checkpointing",
        "train loss",
        "train s",
        "process s",
        "process CPU s",
        "trained tok/s (training)",
        "trained tok/s (process)",
        "peak RSS MiB",
        "ours/x training",
        "ours/x end to end",
        "RSS ours/x",
    ]
    steps = f"at most {job.max_steps} steps" if job.max_steps else "one epoch"
    lines = [
        f"## Throughput: ours vs TRL SFTTrainer, `{model_label(job.model)}` (benchmarks/throughput.py)",
        "",
        f"Job: `{job.model}`, first {job.rows} rows of alpaca_en_demo.json (file order, none held out on either "
        f"side), {steps}, max_seq_length {job.max_length}, LoRA r16/alpha 32/dropout 0 on all linear layers, lr "
        f"{job.learning_rate}, 8 packed rows of <= {job.max_length} tokens per step (unpacked variants: "
        f"{unpacked_batch} samples per step, the same tokens per batch). Medians of {args.repeats} alternating "
        'round(s); every run a fresh process; "process s" is the whole command, start-up included (end to '
        "end). (d), if present, trains only "
        f'{args.slow_steps} step(s): compare its tokens/s, not its times. "ours" is (a) for every row except '
        "(g), which is compared with (f); (h) is compared with (b) below. This CPU has native bf16: "
        f"{'yes' if cpu_has_bf16() else 'no'}.",
        "",
        markdown_table(headers, table_rows),
        "",
    ]
    matched, trl = medians.get("h"), medians.get("b")
    if matched and trl:
        lines += [
            "### Memory-matched: ours with gradient checkpointing (h) vs TRL careful (b), which checkpoints by default",
            "",
            f"- end to end {matched['e2e'] / trl['e2e']:.2f}x, training {matched['tps'] / trl['tps']:.2f}x; peak RSS "
            f"{matched['rss'] / 2**20:.0f} MiB (ours) vs {trl['rss'] / 2**20:.0f} MiB (TRL) = "
            f"{matched['rss'] / trl['rss']:.2f}",
            "",
        ]
    if full is not None:
        lines += mfu_lines(job, full, peak, tokenizer, rows, ours)
    lines += ["### Sample isolation in packed rows", "", *[f"- {line}" for line in isolation], ""]
    lines += ["### Machine", "", machine_lines(machine_info(), load_start, load_end)]
    return "\n".join(lines)


def mfu_lines(job, full, peak, tokenizer, rows, ours) -> list[str]:
    """Full fine-tuning's model FLOPs per second against the matmul peak (and LoRA's, from (a))."""
    flops = training_flops(job, tokenizer, rows, method="full")
    # The full run may stop after a few steps: count the share of the epoch's trained tokens it trained.
    share = min(1.0, full["trained_tokens"] / max(flops["trained_tokens"], 1))
    achieved = flops["total"] * share / full["train_seconds"] / 1e9
    head = "trained tokens only (chunked loss)" if flops["chunked_head"] else "every processed token"
    lines = [
        "### Hardware limit",
        "",
        f"- fp32 `torch.mm` peak (2048x2048, every torch thread, best of 10): **{peak:.1f} GFLOP/s**",
        f"- ours, full fine-tuning of `{model_label(job.model)}` at length {job.max_length}, fp32, gradient "
        f"checkpointing {'on' if full['gradient_checkpointing'] else 'off'}: {full['train_seconds']:.1f} s for "
        f"{full['steps']} steps ({full['trained_tokens']} trained tokens, {100 * share:.0f}% of the epoch's), "
        f"peak RSS {full['peak_rss_bytes'] / 2**20:.0f} MiB, {achieved:.1f} GFLOP/s = **MFU {100 * achieved / peak:.0f}%** "
        f"(6*N per processed token, N = {flops['decoder_params']:,} decoder matmul parameters; the LM head's "
        f"{flops['head_params']:,} on {head}; + causal attention within each sample; recomputation not counted)",
    ]
    if ours:
        lora = training_flops(job, tokenizer, rows, method="lora")
        lora_share = min(1.0, ours["tokens"] / max(lora["trained_tokens"], 1))
        lora_rate = lora["total"] * lora_share / ours["train"] / 1e9
        lines.append(
            f"- ours, LoRA (a): {lora_rate:.1f} GFLOP/s = MFU {100 * lora_rate / peak:.0f}% (4*N per token: forward "
            "and activation gradients, + LoRA's own 6*N_lora, + attention)"
        )
    return [*lines, ""]


if __name__ == "__main__":
    main()
