"""The command-line arguments that name a workflow: the file, ``--set`` and the shortcut flags.

Shared by the engine's commands and the ones plugins contribute (``entity_training.command``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entity_training.workflow import Workflow

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


def add_workflow_arguments(parser: argparse.ArgumentParser, *, config_positional: bool = True) -> None:
    """The workflow file, ``--set``, the shortcut flags and ``--debug``; read back with ``load_workflow_from_args``."""
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


def collect_overrides(args: argparse.Namespace) -> list[Any]:
    from entity_training.overrides import Override, parse_set_argument

    overrides = []
    for flag, (field, _) in NAMED_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            if field == "num_epochs" and float(value).is_integer():
                value = int(value)
            overrides.append(Override(field, value, f"--{flag.replace('_', '-')}"))
    overrides.extend(parse_set_argument(text) for text in args.overrides)
    return overrides


def load_workflow_from_args(args: argparse.Namespace) -> Workflow:
    """The validated workflow named by ``add_workflow_arguments``' arguments. Raises ConfigError."""
    from entity_training.workflow import load_workflow

    return load_workflow(getattr(args, "config", None), collect_overrides(args))
