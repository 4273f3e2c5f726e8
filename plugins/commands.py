"""The ``entity-train`` subcommands the built-in plugins contribute (entry-point group
``entity_training.commands`` in pyproject.toml). Heavy modules are imported inside ``run``."""

from __future__ import annotations

import argparse

from entity_training.arguments import add_workflow_arguments, load_workflow_from_args
from entity_training.command import Command


class PlanCommand(Command):
    help = (
        "Print the memory plan of a workflow without training (per rank: --devices, --device-memory), and the "
        "share of each source of a mixture."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.description = (
            "Estimate the training's peak memory from the model's config (no weights are read, nothing "
            "trains). With --devices and/or --device-memory: the peak of each rank for DDP, ZeRO-1/2/3, "
            "FSDP2 shard-grad-op, full shard and full shard with CPU offload, which of them fit (with 10% "
            "headroom), and the cheapest that does, cheapest meaning least communication: DDP < ZeRO-1 < "
            "ZeRO-2 / shard-grad-op < full shard / ZeRO-3 < offload. Exit 2 when none fits, naming the "
            "smallest setup that would."
        )
        add_workflow_arguments(parser)
        group = parser.add_argument_group("per-rank plan")
        group.add_argument(
            "--devices",
            type=_device_count,
            help="Devices (ranks) to spread the training over, e.g. 8. Alone: devices of the memory the "
            "single-device plan uses (memory_budget_gb, else this device's free memory).",
        )
        group.add_argument(
            "--device-memory",
            type=_device_memory,
            metavar="SIZE",
            help="Memory of each device: 80GiB, 80GB, 24G, 512MiB (K/M/G/T and KiB..TiB: powers of 1024; "
            "KB..TB: of 1000). Alone: one device.",
        )
        group.add_argument(
            "--device-kind",
            choices=["cuda", "cpu", "mps"],
            help="The devices' kind, for the framework overhead each rank pays (the CUDA context). Default: cuda "
            "with --device-memory, else this machine's.",
        )

    def run(self, args: argparse.Namespace) -> int:
        from entity_training.commands import console, print_notices

        workflow = load_workflow_from_args(args)
        print_notices(workflow)
        if args.devices is None and args.device_memory is None:
            from plugins.training.memory_plan import print_workflow_plan

            print_workflow_plan(workflow, console=console)
        else:
            from plugins.training.rank_plan_report import print_rank_plans, this_device

            device_bytes, device_kind = args.device_memory, args.device_kind or "cuda"
            if device_bytes is None:
                device_bytes, kind = this_device(workflow, log=console.print)
                device_kind = args.device_kind or kind
            print_rank_plans(
                workflow, devices=args.devices or 1, device_bytes=device_bytes, device_kind=device_kind, console=console
            )
        print_workflow_mixture(workflow, console)
        return 0


def _device_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of devices: give a whole number of 1 or more")
    return count


def _device_memory(text: str) -> int:
    from plugins.training.rank_plan_report import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
