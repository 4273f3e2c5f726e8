"""The command line: ``python train.py --config X`` and ``entity-train {run,validate,list-plugins,...}``.

The engine's commands are here; installed packages add theirs (``plan`` and ``preview`` come from
the built-in plugins) through ``entity_training.command``. Every command runs inside
``commands.guarded``, the one place where errors are caught: a one-paragraph message, an exit code
(``errors.exit_code_of``: 2 bad config or input, 3 REVIEW failed, 1 other failure, 130/143
interrupted), and a traceback only with ``--debug``. Heavy modules are imported inside the
commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from entity_training.arguments import add_workflow_arguments
from entity_training.command import Command, contributed_commands

# The engine's own subcommands; plugins add theirs through the entry-point group entity_training.commands.
ENGINE_COMMANDS = ("run", "validate", "list-plugins", "schema")

EPILOG = """examples:
  python train.py --config configs/default.yaml
  python train.py --config configs/lora_training.yaml --model tiny --epochs 1 --set run.seed=7
  entity-train validate configs/default.yaml --set training_config.save_steps=50
  entity-train list-plugins
"""


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


def command_names() -> tuple[str, ...]:
    """Every subcommand: the engine's, then the contributed ones."""
    return (*ENGINE_COMMANDS, *contributed_commands(ENGINE_COMMANDS))


def build_parser(contributed: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    contributed = contributed_commands(ENGINE_COMMANDS) if contributed is None else contributed
    parser = argparse.ArgumentParser(
        prog="entity-train",
        description="Fine-tune causal language models with a staged plugin workflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="Run a workflow (same as train.py --config).")
    add_workflow_arguments(run, config_positional=True)
    _add_run_arguments(run)
    validate = sub.add_parser("validate", help="Validate a workflow without running anything.")
    add_workflow_arguments(validate, config_positional=True)
    listing = sub.add_parser("list-plugins", help="List the plugins that can be used in a workflow.")
    listing.add_argument("--plugin-dir", action="append", default=[], help="Also list folder plugins here.")
    listing.add_argument("--debug", action="store_true", help="Show tracebacks.")
    for name, command in contributed.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    schema = sub.add_parser("schema", help="Print the JSON Schema of workflow files.")
    schema.add_argument("--debug", action="store_true", help="Show tracebacks.")
    return parser


def build_train_parser(commands: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    commands = command_names() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=f"Run a fine-tuning workflow. Other commands: entity-train {{{','.join(commands)}}}.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_workflow_arguments(parser, config_positional=False)
    _add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our console draws the progress; third-party tqdm bars (weight loading) would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    contributed = contributed_commands(ENGINE_COMMANDS)
    if argv and argv[0] in (*ENGINE_COMMANDS, *contributed):
        args = build_parser(contributed).parse_args(argv)
    elif argv and argv[0] in ("-h", "--help") and Path(sys.argv[0]).name != "train.py":
        build_parser(contributed).print_help()
        return 0
    else:
        args = build_train_parser((*ENGINE_COMMANDS, *contributed)).parse_args(argv)
        args.command = "run"
    from entity_training import commands

    handlers = {
        "run": commands.run_command,
        "validate": commands.validate_command,
        "list-plugins": commands.list_plugins_command,
        "schema": commands.schema_command,
    }
    handler = handlers.get(args.command) or contributed[args.command].run
    return commands.guarded(handler, args)


if __name__ == "__main__":
    sys.exit(main())
