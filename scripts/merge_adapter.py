"""Merge a LoRA adapter into a 16-bit copy of its base model (on CPU), verified against the adapter.

Examples:
  python scripts/merge_adapter.py runs/my-run/final-model --output merged/
  python scripts/merge_adapter.py runs/my-run/final-model --output merged-bf16/ --dtype bfloat16 --base-model tiny

The base model is read from adapter_config.json unless --base-model is given; a QLoRA adapter is
merged into the unquantized base. The output folder is replaced only when the merge is complete
and its logits match the adapter model's. Exit codes: 0 ok, 2 bad input, 1 failure.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entity_training.tools import call_tool  # noqa: E402
from plugins.export.script_support import run_script  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapter_dir", help="folder with adapter_config.json (e.g. a run's final-model/)")
    parser.add_argument("--output", required=True, help="folder for the merged model (created or replaced)")
    parser.add_argument("--base-model", help="base model name or path; default: the adapter's base_model_name_or_path")
    parser.add_argument(
        "--dtype", choices=["float16", "bfloat16"], default="float16", help="precision of the merged weights"
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a base model stored only as pickle (.bin/.pt): unpickling can run code, so only for files you trust",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="run the base model's own Python code")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_script(
        lambda: call_tool(
            "model_export",
            "merge_adapter",
            adapter_dir=args.adapter_dir,
            output_dir=args.output,
            base_model=args.base_model,
            dtype=args.dtype,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
