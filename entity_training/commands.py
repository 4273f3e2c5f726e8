"""What the engine's commands do, and what every command shares: the console, the plan table,
``run_until``, and ``guarded``, the one place where a command's errors are printed."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from entity_training.arguments import load_workflow_from_args
from entity_training.disk import as_disk_full, existing_parent
from entity_training.distributed import is_main_process
from entity_training.errors import ConfigError, EntityTrainingError, Problem, exit_code_of
from entity_training.executor import EVENTS_FILE, RUN_FILE, WorkflowExecutor
from entity_training.memory import MEMORY_FILE
from entity_training.run_lock import LOCK_FILE, RunLock
from entity_training.secrets import redact
from entity_training.stages import Stage
from entity_training.workflow import Workflow

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

# Settings that let a model file run code; the plan shows each one in red when it is on.
UNSAFE_SETTINGS = {
    "trust_remote_code": "the model's own Python code will run",
    "allow_pickle": "pickle weights will be unpickled, which can run code stored in them",
}


def guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    debug = getattr(args, "debug", False)
    try:
        return handler(args)
    except EntityTrainingError as exc:
        if debug:
            traceback.print_exc()
        _print_error(exc)
        return exit_code_of(exc)
    except KeyboardInterrupt as exc:
        error_console.print("[yellow]Interrupted.[/yellow]")
        return exit_code_of(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback without --debug
        if debug:
            traceback.print_exc()
        disk_full = as_disk_full(exc, run_dir=None)
        if disk_full is not None:
            _print_error(disk_full)
            return exit_code_of(disk_full)
        error_console.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(redact(str(exc)))}\n"
            "Re-run with --debug to see the traceback, and please report it if the cause is not your input."
        )
        return exit_code_of(exc)


def _print_error(exc: BaseException) -> None:
    message = exc.render() if isinstance(exc, ConfigError) else str(exc)
    # Messages quote user text and commands with brackets (".[gguf]", "[q4_k_m]"): never read them as markup.
    error_console.print(f"[red]error:[/red] {escape(redact(message))}", markup=True, soft_wrap=True, emoji=False)


def print_plan(workflow: Workflow, run_dir: Path | None) -> None:
    table = Table(
        title=escape(redact(f"Workflow {workflow.run.name}" + (f"  ->  {run_dir}" if run_dir else ""))),
        show_lines=False,
    )
    table.add_column("stage", style="cyan")
    table.add_column("plugin")
    table.add_column("settings (as written; the rest are defaults)")
    for step in workflow.steps:
        settings = step.plugin.config.model_dump(exclude_unset=True, mode="json")
        text = escape(redact(", ".join(f"{k}={v}" for k, v in settings.items())))
        for key, warning in UNSAFE_SETTINGS.items():
            if settings.get(key):
                text += f"  [bold red]{key}=true: {warning}[/bold red]"
        if step.key_map:
            text = f"{text}  " if text else ""
            text += f"[cyan]memory: {escape(step.key_map.describe())}[/cyan]"
        plugin = step.reference if not step.step_name else f"{step.step_name} ({step.reference})"
        table.add_row(step.stage.value, escape(plugin), text or "[dim]defaults[/dim]")
    console.print(table)
    print_notices(workflow)


def print_notices(workflow: Workflow) -> None:
    """The adjustments plugins announced at load (``Plugin.check_workflow``)."""
    for notice in workflow.notices:
        console.print(f"[yellow]note:[/yellow] {escape(redact(str(notice)))}", soft_wrap=True)


def _resolve_run_dir(workflow: Workflow, args: argparse.Namespace) -> Path:
    if isinstance(args.resume, str):
        return Path(args.resume).expanduser().resolve()
    return Path(args.output or workflow.run.output_dir).expanduser().resolve()


def _check_run_dir(run_dir: Path, args: argparse.Namespace) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(Problem("the run directory is a file; choose another --output", file=str(run_dir)))
    _check_writable(run_dir)
    has_run = (run_dir / MEMORY_FILE).exists() or (run_dir / RUN_FILE).exists()
    if args.resume:
        # A run killed before its first stage ended left only its lock and events: resuming it
        # starts from the beginning (plain re-runs are refused there because of the stale lock).
        started_here = has_run or (run_dir / LOCK_FILE).exists() or (run_dir / EVENTS_FILE).exists()
        if not started_here:
            raise ConfigError(
                Problem(
                    "--resume: there is no run to resume here (no memory.json); run without --resume to start one",
                    file=str(run_dir),
                )
            )
        return
    if has_run and args.overwrite:
        shutil.rmtree(run_dir)
    elif has_run:
        raise ConfigError(
            Problem(
                "this run directory already holds a run. Use --resume to continue it, --output DIR for a new run "
                "directory, or --overwrite to replace it",
                file=str(run_dir),
            )
        )


def _check_writable(run_dir: Path) -> None:
    """The run directory can be created (or written) there; checked without creating anything."""
    existing = existing_parent(run_dir)
    if not existing.is_dir():
        reason = f"{existing} is a file, so no folder can be created under it"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable (permissions, or a read-only file system)"
    else:
        return
    raise ConfigError(Problem(f"cannot create the run directory: {reason}; choose another --output", file=str(run_dir)))


def _confirm(args: argparse.Namespace) -> bool:
    if args.yes or not sys.stdin.isatty() or not sys.stdout.isatty():
        return True
    answer = console.input("Start the run? [Y/n] ").strip().lower()
    return answer in ("", "y", "yes")


def run_command(args: argparse.Namespace) -> int:
    workflow = load_workflow_from_args(args)
    run_dir = _resolve_run_dir(workflow, args)
    is_main = is_main_process()
    if args.dry_run:
        print_plan(workflow, run_dir)
        console.print("[green]Dry run: the workflow is valid.[/green] Nothing was run.")
        return 0
    if is_main:
        _check_run_dir(run_dir, args)
        print_plan(workflow, run_dir)
        if not _confirm(args):
            console.print("Cancelled; nothing was run.")
            return 0
    with RunLock(run_dir, take_over=bool(args.resume), enabled=is_main):
        result = asyncio.run(_execute(workflow, run_dir, resume=bool(args.resume), quiet=not is_main))
    code = result.exit_code
    if is_main:
        _print_result(result, code)
    return code


async def _execute(workflow: Workflow, run_dir: Path, *, resume: bool, quiet: bool):
    from entity_training.console import ConsoleSink

    executor = WorkflowExecutor(workflow, run_dir, resume=resume)
    executor.bus.subscribe(ConsoleSink(console, quiet=quiet))
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            executor.interrupt(signum)
            error_console.print(
                "\n[yellow]Stopping: plugins are saving their state (a checkpoint while training). "
                "Press Ctrl-C again to stop at once.[/yellow]"
            )
        elif task is not None:
            task.cancel()

    installed = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):
                pass
    try:
        result = await executor.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return result


def _print_result(result, code: int) -> None:
    status_style = {"success": "green", "review_failed": "yellow", "interrupted": "yellow"}.get(result.status, "red")
    console.print(f"[bold {status_style}]Run {result.status}[/bold {status_style}] in {result.run_dir}")
    for key, value in redact(result.summary).items():
        console.print(f"  {escape(str(key))}: {escape(str(value))}")
    if result.error is not None and result.status != "success":
        _print_error(result.error)
        if result.status == "interrupted":
            error_console.print(f"Resume with: --resume {result.run_dir}")
        elif not isinstance(result.error, EntityTrainingError) and not isinstance(result.error, KeyboardInterrupt):
            error_console.print(
                f"The traceback is not shown; re-run with --debug to see it. Details: {result.run_dir / 'events.jsonl'}"
            )


def validate_command(args: argparse.Namespace) -> int:
    workflow = load_workflow_from_args(args)
    print_plan(workflow, None)
    console.print(f"[green]{args.config}: valid[/green] ({len(workflow.steps)} plugins)")
    return 0


def list_plugins_command(args: argparse.Namespace) -> int:
    from entity_training.registry import PluginLookupError, known_plugin_names, resolve_plugin

    dirs = [Path(d).resolve() for d in args.plugin_dir]
    table = Table(title="Plugins")
    table.add_column("name", style="cyan")
    table.add_column("stages")
    table.add_column("description")
    for name in known_plugin_names(dirs):
        try:
            cls = resolve_plugin(name, dirs).cls
        except PluginLookupError as exc:
            table.add_row(name, "[red]unavailable[/red]", str(exc))
            continue
        stages = ", ".join(s.value for s in cls.supported_stages)
        table.add_row(name, stages, cls.description or (cls.__doc__ or "").strip().split("\n")[0])
    console.print(table)
    return 0


def run_until(workflow: Workflow, stage: Stage):
    """Run the workflow's stages up to ``stage`` in a throwaway run directory; returns its memory.

    Raises the run's error when a stage failed."""
    from entity_training.console import ConsoleSink

    with tempfile.TemporaryDirectory(prefix="entity-train-") as tmp:
        executor = WorkflowExecutor(workflow, Path(tmp))
        executor.bus.subscribe(ConsoleSink(console, quiet=True))
        result = asyncio.run(executor.run(stop_after=stage))
    if result.status != "success":
        raise result.error if isinstance(result.error, Exception) else EntityTrainingError(str(result.error))
    return result.memory


def schema_command(args: argparse.Namespace) -> int:
    import json

    from entity_training.schema import workflow_json_schema

    console.print_json(json.dumps(workflow_json_schema()))
    return 0
