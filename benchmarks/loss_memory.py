"""The chunked cross-entropy against the model's own loss, for a large vocabulary: peak RSS and
step time of a training step, each variant in a fresh process, alternating.

    python benchmarks/loss_memory.py [--vocab 128256] [--rows 4] [--length 512] [--repeats 2] [--quick]

The model is a small Llama (hidden 256, 2 layers) with a large vocabulary, so that the logits
dominate memory the way they do for a 1-8B model with a 128k vocabulary; trained in full, fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PYTHON, load_average, markdown_table, median, require_ok, run_child  # noqa: E402

STEPS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=128_256)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: vocabulary 32000, 2 x 128 tokens, 1 round")
    parser.add_argument("--variant", choices=("plain", "chunked"), help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args) -> None:
    """One variant: STEPS training steps; prints the median step seconds."""
    import torch
    from transformers import AutoModelForCausalLM

    from plugins.data.collator import PackedCollator
    from plugins.training.chunked_loss import chunked_causal_lm_loss, split_for_chunked_loss

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).train()
    generator = torch.Generator().manual_seed(0)
    half = args.length // 2
    rows = []
    for _ in range(args.rows):
        ids = torch.randint(10, args.vocab, (args.length,), generator=generator).tolist()
        positions = list(range(half)) + list(range(args.length - half))
        rows.append({"input_ids": ids, "labels": ids, "position_ids": positions, "seq_lengths": [half, half]})
    batch = PackedCollator(pad_token_id=0)(rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    split = split_for_chunked_loss(model)
    features = {name: value for name, value in batch.items() if name != "labels"}
    seconds = []
    for _ in range(STEPS):
        start = time.perf_counter()
        if args.variant == "plain":
            loss = model(**batch).loss
        else:
            hidden = split.decoder(**features).last_hidden_state
            loss = chunked_causal_lm_loss(hidden, split.head, batch["labels"], None, split.tokens_per_chunk)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({"step_seconds": median(seconds), "loss": float(loss)}))


def main() -> None:
    args = parse_args()
    if args.variant:
        child(args)
        return
    if args.quick:
        args.vocab, args.rows, args.length, args.repeats = 32_000, 2, 128, 1
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.training import build_tiny_model_dir

    load_start = load_average()
    model_dir = build_tiny_model_dir(Path(tempfile.mkdtemp(prefix="loss-memory-")), hidden=256, vocab=args.vocab)
    results: dict[str, list[dict]] = {"plain": [], "chunked": []}
    for round_index in range(args.repeats):
        order = ("plain", "chunked") if round_index % 2 == 0 else ("chunked", "plain")
        for variant in order:
            command = [PYTHON, __file__, "--variant", variant, "--model-dir", str(model_dir)]
            command += ["--vocab", str(args.vocab), "--rows", str(args.rows), "--length", str(args.length)]
            run = run_child(command)
            require_ok(run, f"the {variant} loss")
            line = next(line for line in run.output.splitlines() if line.startswith("RESULT "))
            results[variant].append({**json.loads(line.removeprefix("RESULT ")), "peak": run.peak_rss_bytes})
    rows = []
    for variant, runs in results.items():
        rows.append(
            [
                variant,
                f"{median([r['peak'] for r in runs]) / 2**20:.0f}",
                f"{median([r['step_seconds'] for r in runs]):.2f}",
                f"{runs[-1]['loss']:.4f}",
            ]
        )
    print(
        f"vocab {args.vocab}, {args.rows} x {args.length} tokens, full fine-tuning fp32, medians of {args.repeats} "
        f"alternating rounds (load average {load_start} -> {load_average()})"
    )
    print(markdown_table(["loss", "peak RSS MiB", "step s", "last loss"], rows))


if __name__ == "__main__":
    main()
