"""Console rendering of run events with rich: stage lines, logs, and live progress bars.

In a terminal, progress is drawn as bars; otherwise (CI, logs) progress is printed as plain
lines at most every few seconds per task.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_PLAIN_PROGRESS_INTERVAL = 5.0


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class ConsoleSink:
    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=False, highlight=False)
        self.quiet = quiet
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._last_plain: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event['type']}", None)
        if handler:
            handler(event)

    # -- handlers -----------------------------------------------------------------------------
    def _on_run_start(self, event: dict[str, Any]) -> None:
        verb = "Resuming" if event.get("resume") else "Starting"
        self.console.print(f"[bold]{verb} run[/bold] {escape(str(event['run']))}  ->  {escape(str(event['run_dir']))}")

    def _on_stage_start(self, event: dict[str, Any]) -> None:
        self.console.print(f"[bold cyan]▶ {event['stage']}[/bold cyan]  {', '.join(event['plugins'])}")

    def _on_plugin_end(self, event: dict[str, Any]) -> None:
        self._close_progress()
        mark = {"success": "[green]✓[/green]", "skipped": "[dim]–[/dim]"}.get(event["status"], "[red]✗[/red]")
        result = f"  {escape(str(event['result']))}" if event.get("result") and event["status"] == "success" else ""
        self.console.print(f"  {mark} {event['plugin']} [dim]({event['seconds']:.1f}s)[/dim]{result}")

    def _on_stage_end(self, event: dict[str, Any]) -> None:
        if event.get("reason") == "resumed":
            self.console.print(f"[dim]– {event['stage']} already done in the resumed run[/dim]")

    def _on_log(self, event: dict[str, Any]) -> None:
        if not self.quiet:
            self._print_above(f"    {escape(event['message'])}")

    def _on_warning(self, event: dict[str, Any]) -> None:
        self._print_above(f"    [yellow]warning:[/yellow] {escape(event['message'])}")

    def _on_metrics(self, event: dict[str, Any]) -> None:
        if self.live or self.quiet:
            return  # the progress bar shows them
        step = f"step {event['step']}: " if event.get("step") is not None else ""
        self.console.print(f"    {step}{escape(_format_fields(event['values']))}")

    def _on_progress(self, event: dict[str, Any]) -> None:
        task, completed, total = event["task"], event["completed"], event.get("total")
        # Plugin text may hold brackets ("[q4_k_m]") that rich would otherwise read as markup.
        fields = escape(_format_fields(event.get("fields") or {}))
        if not self.live:
            now = time.monotonic()
            done = total is not None and completed >= total
            if done or now - self._last_plain.get(task, 0.0) >= _PLAIN_PROGRESS_INTERVAL:
                self._last_plain[task] = now
                of = f"/{total:g}" if total else ""
                self.console.print(f"    {escape(task)}: {completed:g}{of} {fields}")
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("    {task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total, info=fields)
        self._progress.update(self._tasks[task], completed=completed, total=total, info=fields)

    def _on_run_end(self, event: dict[str, Any]) -> None:
        self._close_progress()

    # -- helpers ------------------------------------------------------------------------------
    def _print_above(self, text: str) -> None:
        (self._progress.console if self._progress else self.console).print(text)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()
