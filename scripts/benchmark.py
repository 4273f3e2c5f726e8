"""Benchmark exported models: load time, greedy tokens/s and peak memory on chat prompts.

Examples:
  python scripts/benchmark.py runs/my-run/export/merged runs/my-run/export/gguf/my-model-q8_0.gguf
  python scripts/benchmark.py runs/my-run/export/huggingface --base-model tiny --prompt "Explain LoRA in one sentence."

Each PATH is a transformers model folder, a PEFT adapter folder or a .gguf file (GGUF needs
llama-cpp-python). Prompts are rendered with the model's chat template (from the first folder
with a tokenizer, or the GGUF's metadata). --base-model adds the base model as the first row.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entity_training.tools import call_tool  # noqa: E402
from plugins.export.script_support import run_script  # noqa: E402

DEFAULT_PROMPTS = ["Hello! Who are you?", "Write one sentence about the sea.", "What is 2 + 3?"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", help="model folders, adapter folders or .gguf files")
    parser.add_argument("--base-model", help="also measure this base model (name or path)")
    parser.add_argument(
        "--prompt", action="append", help="a user message (repeatable); default: three built-in prompts"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    result = call_tool(
        "inference_test",
        "benchmark",
        paths=args.paths,
        messages=args.prompt or DEFAULT_PROMPTS,
        max_new_tokens=args.max_new_tokens,
        base_model=args.base_model,
    )
    print(f"{'model':<28} {'kind':<8} {'load s':>8} {'tokens/s':>10} {'peak MiB':>10}", file=sys.stderr)
    for row in result["models"]:
        print(
            f"{row['name']:<28} {row['kind']:<8} {row['load_seconds']:>8.2f} {row['tokens_per_second']:>10.1f} {row['peak_memory_bytes'] / 2**20:>10.1f}",
            file=sys.stderr,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    return run_script(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
