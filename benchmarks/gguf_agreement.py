"""How closely the GGUF files of a finished run follow the trained model, over many positions.

The export's own verification compares a few prompts (enough to refuse a broken file). This
script compares every held-out prompt of a run: the trained model as evaluated (the adapter on its
base, float32) is the reference; each GGUF type is written from the merged export and run in
llama.cpp on the same token ids (teacher-forced), and the top-1 next token is compared at every
position of the reference's greedy answer.

    python benchmarks/gguf_agreement.py RUN_DIR [--types q8_0,f16] [--prompts data/quickstart/checks.jsonl]

RUN_DIR is a finished run with ``final-model`` and ``export/merged`` (e.g. the quick start's). Prompts: the ``prompt``
of each row of a JSONL file (a behaviour checks file or chat rows with ``messages``). Needs
llama-cpp-python (the gguf extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info, machine_lines  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory with export/merged")
    parser.add_argument("--types", default="q8_0,f16", help="comma-separated GGUF types to compare")
    parser.add_argument("--prompts", type=Path, default=Path("data/quickstart/checks.jsonl"))
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy tokens per prompt in the reference")
    return parser.parse_args()


def user_messages(path: Path) -> list[list[dict[str, str]]]:
    conversations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" in row:
            conversations.append([{"role": "user", "content": row["prompt"]}])
        else:
            conversations.append([m for m in row["messages"] if m["role"] != "assistant"][:1])
    return conversations


def main() -> None:
    import torch

    from plugins.eval.loading import load_saved_tokenizer, load_trained_model
    from plugins.export.gguf_writer import write_gguf
    from plugins.export.verify import build_reference, compare_gguf, gate

    args = parse_args()
    load_start = load_average()
    merged = args.run_dir / "export" / "merged"
    tokenizer = load_saved_tokenizer(merged)
    prompts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in user_messages(args.prompts)
    ]
    model = load_trained_model(
        args.run_dir / "final-model", base_model=None, dtype=torch.float32, device="cpu", permissions={}
    )
    reference = build_reference(model, tokenizer, prompts, max_new_tokens=args.new_tokens)
    del model
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for quantization in args.types.split(","):
            path = Path(scratch) / f"model-{quantization}.gguf"
            write_gguf(merged, path, quantization=quantization)
            comparison = gate(compare_gguf(path, tokenizer, prompts, reference), quantization)
            rows.append((quantization, comparison))
            path.unlink()
    print(machine_lines(machine_info(), load_start, load_average()))
    print(f"run: {args.run_dir}; prompts: {len(prompts)} from {args.prompts}; reference: the trained adapter, float32")
    print(
        "| GGUF | positions | top-1 agreement | excluding near-ties (the export's gate) "
        "| greedy answers identical | max abs logit diff |"
    )
    print("|---|---|---|---|---|---|")
    for quantization, c in rows:
        print(
            f"| {quantization} | {c.positions} | {c.top1_agreement:.2%} | {c.decisive_top1_agreement:.2%} "
            f"| {c.greedy_match:.0%} | {c.max_abs_logit_diff:.3g} |"
        )


if __name__ == "__main__":
    main()
