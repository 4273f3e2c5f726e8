"""WorkflowExecutor: runs each stage once, in order; ERROR handlers on failure; cleanup always.

Writes to the run directory: ``events.jsonl`` (every event), ``memory.json`` (after each stage)
and ``run.json`` (status, per-plugin timings, summary) at the end. On the non-main ranks of a
distributed run it runs INPUT..DO only and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entity_training import events
from entity_training.context import ERROR_KEY, SUMMARY_KEY, PluginContext
from entity_training.disk import as_disk_full
from entity_training.distributed import is_main_process
from entity_training.errors import DiskFull, ReviewFailed, RunInterrupted, exit_code_of
from entity_training.memory import Memory, atomic_write_text
from entity_training.secrets import redact
from entity_training.stages import RUN_ORDER, Stage
from entity_training.workflow import Step, Workflow

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"


@dataclass
class StepRecord:
    stage: str
    plugin: str
    status: str  # success | failed | skipped | interrupted | review_failed
    seconds: float
    result: str | None = None


@dataclass
class RunResult:
    status: str  # success | failed | review_failed | interrupted
    run_dir: Path
    stages: list[StepRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    memory: Memory | None = None

    @property
    def exit_code(self) -> int:
        if self.status == "success":
            return 0
        return 1 if self.error is None else exit_code_of(self.error)


class WorkflowExecutor:
    def __init__(
        self,
        workflow: Workflow,
        run_dir: Path,
        *,
        resume: bool = False,
        bus: events.EventBus | None = None,
        cancel_event: threading.Event | None = None,
    ):
        self.workflow = workflow
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.bus = bus or events.EventBus()
        self.cancel_event = cancel_event or threading.Event()
        self._interrupt_signal: int | None = None
        self.is_main = is_main_process()
        self.memory = Memory()
        self.records: list[StepRecord] = []

    def _context(self, step: Step, stage: Stage | None = None) -> PluginContext:
        return PluginContext(
            memory=self.memory,
            bus=self.bus,
            tools=self.workflow.tools,
            run_dir=self.run_dir,
            stage=stage or step.stage,
            plugin_name=step.name,
            cancel_event=self.cancel_event,
            run_settings=self.workflow.run.model_dump(),
            resume=self.resume,
            hand_offs=step.hand_offs(),
        )

    async def run(self, stop_after: Stage | None = None) -> RunResult:
        """Run the workflow. Never raises for plugin failures: the result carries the error."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        jsonl = events.JsonlSink(self.run_dir / EVENTS_FILE) if self.is_main else None
        if jsonl:
            self.bus.subscribe(jsonl)
        if self.resume:
            self.memory = Memory.load(self.run_dir)
        started = time.time()
        self.bus.emit(events.RUN_START, run=self.workflow.run.name, run_dir=str(self.run_dir), resume=self.resume)
        status, error = "success", None
        initialized: list[Step] = []
        try:
            for step in self.workflow.steps:
                await step.plugin.initialize(self._context(step))
                initialized.append(step)
            await self._run_stages(stop_after)
        except ReviewFailed as exc:
            status, error = "review_failed", exc
            await self._run_reporters_after_review_failure()
        except (RunInterrupted, asyncio.CancelledError, KeyboardInterrupt) as exc:
            status, error = "interrupted", self._interruption(exc)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, then ERROR handlers run
            status, error = "failed", self._explained(exc)
            await self._run_error_handlers(error)
        finally:
            await self._cleanup(initialized)
        result = RunResult(
            status, self.run_dir, self.records, dict(self.memory.get(SUMMARY_KEY, {})), error, self.memory
        )
        closing = [
            lambda: self.bus.emit(
                events.RUN_END,
                status=status,
                seconds=round(time.time() - started, 3),
                error=str(error) if error else None,
            )
        ]
        if self.is_main:
            closing += [lambda: self.memory.save(self.run_dir), lambda: self._write_run_file(result, started)]
        if jsonl:
            closing.append(jsonl.close)
        for write in closing:
            self._write_or_report_full_disk(write, result)
        return result

    def interrupt(self, signal_number: int) -> None:
        """Ask the plugins to save and stop (Ctrl-C, SIGTERM); the run ends with code 128 + the signal."""
        if self._interrupt_signal is None:
            self._interrupt_signal = signal_number
        self.cancel_event.set()

    def _interruption(self, error: BaseException) -> RunInterrupted:
        own_signal = error.signal_number if isinstance(error, RunInterrupted) else 2
        message = str(error) if isinstance(error, RunInterrupted) else "interrupted"
        return RunInterrupted(message, signal_number=self._interrupt_signal or own_signal)

    def _write_or_report_full_disk(self, write, result: RunResult) -> None:
        """The run's closing writes: on a full disk the run reports that, instead of crashing on its way out."""
        try:
            write()
        except OSError as exc:
            disk_full = as_disk_full(exc, run_dir=self.run_dir, writer="the run's own files")
            if disk_full is None:
                raise
            if not isinstance(result.error, DiskFull):
                result.status, result.error = "failed", disk_full

    async def _run_stages(self, stop_after: Stage | None) -> None:
        last_stage = Stage.DO if not self.is_main else None
        for stage in RUN_ORDER:
            steps = self.workflow.steps_in(stage)
            if steps and stage.value in self.memory.completed_stages:
                for step in steps:
                    self.records.append(StepRecord(stage.value, step.name, "skipped", 0.0, "done in the resumed run"))
                self.bus.emit(events.STAGE_END, stage=stage.value, status="skipped", seconds=0.0, reason="resumed")
            elif steps:
                await self._run_stage(stage, steps)
            if stage in (stop_after, last_stage):
                break

    async def _run_stage(self, stage: Stage, steps: list[Step], *, mark_done: bool = True) -> None:
        self.bus.emit(events.STAGE_START, stage=stage.value, plugins=[s.name for s in steps])
        stage_started = time.perf_counter()
        for step in steps:
            if self.cancel_event.is_set():
                raise RunInterrupted("cancelled by the user")
            self.bus.emit(events.PLUGIN_START, stage=stage.value, plugin=step.name)
            started = time.perf_counter()
            try:
                result = await step.plugin.execute(self._context(step))
            except BaseException as exc:
                status = {ReviewFailed: "review_failed", RunInterrupted: "interrupted"}.get(type(exc), "failed")
                if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                    status = "interrupted"
                self._record(stage, step, status, started, str(exc))
                self.bus.emit(
                    events.STAGE_END,
                    stage=stage.value,
                    status=status,
                    seconds=round(time.perf_counter() - stage_started, 3),
                )
                raise
            self._record(stage, step, "success", started, None if result is None else str(result))
        if mark_done:
            self.memory.mark_stage_done(stage.value)
        if self.is_main:
            self.memory.save(self.run_dir)
        self.bus.emit(
            events.STAGE_END, stage=stage.value, status="success", seconds=round(time.perf_counter() - stage_started, 3)
        )

    def _record(self, stage: Stage, step: Step, status: str, started: float, result: str | None) -> None:
        seconds = round(time.perf_counter() - started, 3)
        self.records.append(StepRecord(stage.value, step.name, status, seconds, result))
        self.bus.emit(
            events.PLUGIN_END, stage=stage.value, plugin=step.name, status=status, seconds=seconds, result=result
        )

    async def _run_reporters_after_review_failure(self) -> None:
        """OUTPUT plugins that only describe the run (a report) still run when REVIEW said FAIL."""
        steps = [s for s in self.workflow.steps_in(Stage.OUTPUT) if s.plugin.run_after_review_failure]
        if not steps or not self.is_main:
            return
        try:
            await self._run_stage(Stage.OUTPUT, steps, mark_done=False)
        except Exception as exc:  # a failing report must not hide the review verdict
            self.bus.emit(events.WARNING, message=f"reporting after the failed review failed: {exc}")

    def _failed_record(self) -> StepRecord | None:
        return next((r for r in reversed(self.records) if r.status == "failed"), None)

    def _explained(self, error: BaseException) -> BaseException:
        """The failure as the user should read it: a full disk says where and what to do."""
        failed = self._failed_record()
        writer = f"{failed.plugin} ({failed.stage})" if failed else None
        return as_disk_full(error, run_dir=self.run_dir, writer=writer) or error

    async def _run_error_handlers(self, error: BaseException) -> None:
        failed = self._failed_record()
        self.memory.set(
            ERROR_KEY,
            {
                "stage": failed.stage if failed else None,
                "plugin": failed.plugin if failed else None,
                "type": type(error).__name__,
                "message": str(error),
            },
            stage=Stage.ERROR.value,
        )
        for step in self.workflow.steps_in(Stage.ERROR):
            started = time.perf_counter()
            try:
                await step.plugin.execute(self._context(step))
                self._record(Stage.ERROR, step, "success", started, None)
            except Exception as exc:  # an error handler must not hide the original failure
                self._record(Stage.ERROR, step, "failed", started, str(exc))
                self.bus.emit(events.WARNING, message=f"error handler {step.name} failed: {exc}", plugin=step.name)

    async def _cleanup(self, steps: list[Step]) -> None:
        for step in reversed(steps):
            try:
                await step.plugin.cleanup(self._context(step))
            except Exception as exc:  # cleanup of one plugin must not prevent the others'
                self.bus.emit(events.WARNING, message=f"cleanup of {step.name} failed: {exc}", plugin=step.name)

    def _write_run_file(self, result: RunResult, started: float) -> None:
        error = result.error
        payload = {
            "name": self.workflow.run.name,
            "status": result.status,
            "started_at": started,
            "finished_at": time.time(),
            "workflow": str(self.workflow.path) if self.workflow.path else None,
            "stages": [
                {"stage": r.stage, "plugin": r.plugin, "status": r.status, "seconds": r.seconds} for r in self.records
            ],
            "summary": result.summary,
            "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
            "exit_code": result.exit_code,
        }
        atomic_write_text(self.run_dir / RUN_FILE, json.dumps(redact(payload), indent=2, default=str))
