"""The ``entity-train`` subcommands the built-in plugins contribute (entry-point group
``entity_training.commands`` in pyproject.toml). Heavy modules are imported inside ``run``."""

from __future__ import annotations

import argparse

from entity_training.arguments import add_workflow_arguments, load_workflow_from_args
from entity_training.command import Command


class PlanCommand(Command):
    help = "Print the memory plan of a workflow without training (and the share of each source of a mixture)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_workflow_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from entity_training.commands import console, print_notices
        from plugins.training.memory_plan import print_workflow_plan

        workflow = load_workflow_from_args(args)
        print_notices(workflow)
        print_workflow_plan(workflow, console=console)
        print_workflow_mixture(workflow, console)
        return 0


def print_workflow_mixture(workflow, console) -> None:
    """The share of each source of a mixing loader: realised, by running the data stages (their
    tokenized cache then serves the training run), or only the targets when no step prepares data."""
    from entity_training import Stage
    from entity_training.commands import run_until
    from plugins import memory_keys
    from plugins.data.mixture_table import mixing_loader_config, print_mixture

    loader = mixing_loader_config(workflow)
    if loader is None:
        return
    prepares = any(memory_keys.DATASET_TOKEN_STATS in step.declared("provides") for step in workflow.steps)
    token_stats = run_until(workflow, Stage.THINK).get(memory_keys.DATASET_TOKEN_STATS) if prepares else None
    print_mixture((token_stats or {}).get("mixture"), loader, console)


class PreviewCommand(Command):
    help = "Show tokenized samples with trained tokens highlighted."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_workflow_arguments(parser)
        parser.add_argument("--n", type=int, default=3, help="Number of samples to show.")

    def run(self, args: argparse.Namespace) -> int:
        from entity_training import ConfigError, Problem, Stage
        from entity_training.commands import console, run_until
        from plugins import memory_keys
        from plugins.data.preview import print_preview
        from plugins.models import load_tokenizer

        workflow = load_workflow_from_args(args)
        memory = run_until(workflow, Stage.THINK)
        tokenized = memory.get(memory_keys.DATASET_TOKENIZED)
        if not tokenized:
            raise ConfigError(Problem("the workflow has no data preparation step (THINK) to preview", file=args.config))
        config = memory.get(memory_keys.TRAINING_CONFIG)
        tokenizer = load_tokenizer(config.model_name_or_path if config else tokenized.get("tokenizer"))
        print_preview(tokenized, tokenizer, n=args.n, console=console)
        return 0
