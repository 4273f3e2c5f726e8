"""The command line: ``python train.py --config X`` and ``entity-train {run,validate,list-plugins,...}``.

Errors are typed and caught here, in one place: a one-paragraph message, an exit code (2 bad
config or input, 3 REVIEW failed, 1 other failure, 130/143 interrupted), and a traceback only
with ``--debug``. Heavy modules are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Named flags -> the config field they set, in every plugin of the workflow that has that field.
NAMED_FLAGS: dict[str, tuple[str, type]] = {
    "dataset": ("dataset_path", str),
    "model": ("model_name_or_path", str),
    "method": ("training_method", str),
    "epochs": ("num_epochs", float),
    "batch_size": ("batch_size", int),
    "lr": ("learning_rate", float),
    "lora_rank": ("lora_r", int),
    "lora_alpha": ("lora_alpha", float),
    "warmup_steps": ("warmup_steps", int),
    "eval_steps": ("evaluation_steps", int),
    "save_steps": ("save_steps", int),
    "max_steps": ("max_steps", int),
}
SUBCOMMANDS = ("run", "validate", "list-plugins", "preview", "plan", "schema")

EPILOG = """examples:
  python train.py --config configs/default.yaml
  python train.py --config configs/lora_training.yaml --model tiny --epochs 1 --set run.seed=7
  entity-train validate configs/default.yaml --set training_config.save_steps=50
  entity-train list-plugins
"""


def _add_workflow_arguments(parser: argparse.ArgumentParser, *, config_positional: bool) -> None:
    if config_positional:
        parser.add_argument("config", help="Workflow YAML file.")
    else:
        parser.add_argument("--config", "-c", required=True, help="Workflow YAML file.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override any key: PLUGIN.KEY=VALUE (e.g. training_config.learning_rate=1e-4), run.seed=7, "
        "or a bare setting name. Values are parsed as YAML scalars. Repeatable.",
    )
    group = parser.add_argument_group("shortcuts (set the named setting in every plugin that has it)")
    group.add_argument("--dataset", help="Dataset file or folder (dataset_path).")
    group.add_argument("--model", help="Registry name, local path or hub id (model_name_or_path).")
    group.add_argument("--method", choices=["full", "lora", "qlora", "dora"], help="Training method (training_method).")
    group.add_argument("--epochs", type=float, help="Number of epochs (num_epochs).")
    group.add_argument("--batch-size", type=int, help="Micro-batch size (batch_size).")
    group.add_argument("--lr", type=float, help="Learning rate (learning_rate).")
    group.add_argument("--lora-rank", type=int, help="LoRA rank (lora_r).")
    group.add_argument("--lora-alpha", type=float, help="LoRA alpha (lora_alpha).")
    group.add_argument("--warmup-steps", type=int, help="Warm-up steps (warmup_steps).")
    group.add_argument("--eval-steps", type=int, help="Evaluate every N steps (evaluation_steps).")
    group.add_argument("--save-steps", type=int, help="Checkpoint every N steps (save_steps).")
    group.add_argument("--max-steps", type=int, help="Stop after N optimizer steps (max_steps).")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks.")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="Run directory (default: run.output_dir of the workflow).")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="Continue an interrupted run: its run directory, else --output / run.output_dir.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace a previous run in the run directory.")
    parser.add_argument("--dry-run", action="store_true", help="Load and validate everything, print the plan, stop.")
    parser.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation in a terminal.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entity-train",
        description="Fine-tune causal language models with a staged plugin workflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="Run a workflow (same as train.py --config).")
    _add_workflow_arguments(run, config_positional=True)
    _add_run_arguments(run)
    validate = sub.add_parser("validate", help="Validate a workflow without running anything.")
    _add_workflow_arguments(validate, config_positional=True)
    listing = sub.add_parser("list-plugins", help="List the plugins that can be used in a workflow.")
    listing.add_argument("--plugin-dir", action="append", default=[], help="Also list folder plugins here.")
    listing.add_argument("--debug", action="store_true", help="Show tracebacks.")
    preview = sub.add_parser("preview", help="Show tokenized samples with trained tokens highlighted.")
    _add_workflow_arguments(preview, config_positional=True)
    preview.add_argument("--n", type=int, default=3, help="Number of samples to show.")
    plan = sub.add_parser("plan", help="Print the memory plan of a workflow without training.")
    _add_workflow_arguments(plan, config_positional=True)
    schema = sub.add_parser("schema", help="Print the JSON Schema of workflow files.")
    schema.add_argument("--debug", action="store_true", help="Show tracebacks.")
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=f"Run a fine-tuning workflow. Other commands: entity-train {{{','.join(SUBCOMMANDS)}}}.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_workflow_arguments(parser, config_positional=False)
    _add_run_arguments(parser)
    return parser


def collect_overrides(args: argparse.Namespace) -> list[Any]:
    from entity_training.workflow import Override, parse_set_argument

    overrides = []
    for flag, (field, _) in NAMED_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            if field == "num_epochs" and float(value).is_integer():
                value = int(value)
            overrides.append(Override(field, value, f"--{flag.replace('_', '-')}"))
    overrides.extend(parse_set_argument(text) for text in args.overrides)
    return overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our console draws the progress; third-party tqdm bars (weight loading) would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if argv and argv[0] in SUBCOMMANDS:
        args = build_parser().parse_args(argv)
    elif argv and argv[0] in ("-h", "--help") and Path(sys.argv[0]).name != "train.py":
        build_parser().print_help()
        return 0
    else:
        args = build_train_parser().parse_args(argv)
        args.command = "run"
    from entity_training import commands

    handler = {
        "run": commands.run_command,
        "validate": commands.validate_command,
        "list-plugins": commands.list_plugins_command,
        "preview": commands.preview_command,
        "plan": commands.plan_command,
        "schema": commands.schema_command,
    }[args.command]
    return commands.guarded(handler, args)


if __name__ == "__main__":
    sys.exit(main())
