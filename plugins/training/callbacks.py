"""Trainer callbacks: report to the engine and to metrics files, stop on Ctrl-C or a plateau."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from plugins.training.resources import current_memory_bytes

METRIC_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "trained_tokens",
    "memory_bytes",
    "elapsed_seconds",
    "eta_seconds",
)


class TokenCounter:
    """Trained tokens (labels != -100) seen by this process; the Trainer adds, callbacks read."""

    def __init__(self) -> None:
        self.total = 0


class MetricsFiles:
    """``metrics.jsonl`` (every value) and ``metrics.csv`` (fixed columns) in the run directory."""

    def __init__(self, run_dir: Path):
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        self.csv_path = Path(run_dir) / "metrics.csv"
        new_csv = not self.csv_path.exists()
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._csv_handle = self.csv_path.open("a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._csv.writerow(record)
        self._csv_handle.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._csv_handle.close()


class EngineReportingCallback(TrainerCallback):
    """Turns the Trainer's logs into engine metrics and progress, and honours Ctrl-C.

    On cancellation it asks the Trainer to save a checkpoint and stop; the plugin then raises
    RunInterrupted. Only the main process writes files and emits events.
    """

    def __init__(self, context, tokens: TokenCounter, files: MetricsFiles | None):
        self.context = context
        self.tokens = tokens
        self.files = files
        self.interrupted = False
        self.history: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        self._window_start = self._start
        self._window_tokens = 0
        self._first_step = 0
        self._reported_nonfinite: set[str] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._window_start = time.perf_counter()
        self._window_tokens = self.tokens.total
        self._first_step = state.global_step  # > 0 when resuming

    def on_evaluate(self, args, state, control, **kwargs):
        if state.global_step == self._first_step:  # eval_on_start: not training time
            self._start = self._window_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if not self.interrupted and _any_rank(self.context.cancelled, args.device):
            self.interrupted = True
            control.should_save = True
            control.should_training_stop = True
        if self.files is not None:
            self.context.progress("training", state.global_step, state.max_steps, eta=self._eta_seconds(state))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Every rank keeps the history (its decisions, e.g. a final evaluation, must agree);
        # only the main process writes files and emits events.
        if not logs:
            return
        now = time.perf_counter()
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                record[key] = value
            elif isinstance(value, float):
                self._report_nonfinite(key, value, state.global_step)
        if "loss" in logs:
            window = max(now - self._window_start, 1e-9)
            record["tokens_per_second"] = round((self.tokens.total - self._window_tokens) / window, 1)
            self._window_start, self._window_tokens = now, self.tokens.total
        record["trained_tokens"] = self.tokens.total
        record["memory_bytes"] = current_memory_bytes()
        record["elapsed_seconds"] = round(now - self._start, 2)
        record["eta_seconds"] = self._eta_seconds(state)
        self.history.append(record)
        if self.files is not None:
            self.files.write(record)
            self.context.metrics(record, step=state.global_step)

    def _report_nonfinite(self, key: str, value: float, step: int) -> None:
        """Once per metric: a NaN or infinite loss is left out of the metrics files, so say it here."""
        if key in self._reported_nonfinite or self.files is None:
            return
        self._reported_nonfinite.add(key)
        self.context.warn(
            f"{key} is {value} at step {step}: training has diverged or the data has a sample without "
            "trained tokens. Lower learning_rate, keep max_grad_norm at 1.0, use precision: fp32 (or bf16 "
            "instead of fp16), and check masking with `entity-train preview`. Non-finite values are left "
            "out of metrics.jsonl and metrics.csv."
        )

    def _eta_seconds(self, state) -> float | None:
        done = state.global_step - self._first_step
        if done <= 0 or not state.max_steps:
            return None
        elapsed = time.perf_counter() - self._start
        return round(elapsed / done * (state.max_steps - state.global_step), 1)


def _any_rank(flag: bool, device) -> bool:
    """True if ``flag`` is set on any process: every rank must stop (and save) at the same step."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())


class EarlyStopping(TrainerCallback):
    """Stop after ``patience`` evaluations without a lower validation loss.

    Written here rather than using transformers' EarlyStoppingCallback, which requires
    load_best_model_at_end and so ties save_steps to evaluation_steps.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.best = math.inf
        self.stale = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best:
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
            if self.stale >= self.patience:
                control.should_training_stop = True
