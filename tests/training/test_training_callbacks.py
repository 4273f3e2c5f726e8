"""The reporting callback: non-finite losses are announced once and kept out of the metrics files."""

from __future__ import annotations

import json
from types import SimpleNamespace

from plugins.training.callbacks import EngineReportingCallback, MetricsFiles, TokenCounter


class RecordingContext:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.metric_records: list[dict] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def metrics(self, values: dict, step: int | None = None) -> None:
        self.metric_records.append(values)


def test_nan_and_inf_are_warned_once_each_and_not_written(tmp_path):
    context = RecordingContext()
    files = MetricsFiles(tmp_path)
    callback = EngineReportingCallback(context, TokenCounter(), files)
    for step in (1, 2, 3):
        state = SimpleNamespace(global_step=step, epoch=step / 10, max_steps=10)
        logs = {"loss": float("nan"), "grad_norm": float("inf"), "learning_rate": 1e-3}
        callback.on_log(None, state, None, logs=logs)
    files.close()

    assert len(context.warnings) == 2
    assert "loss is nan at step 1" in context.warnings[0] and "learning_rate" in context.warnings[0]
    assert "grad_norm is inf at step 1" in context.warnings[1]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("loss" not in row and row["learning_rate"] == 1e-3 for row in rows)


def test_the_evaluation_before_the_first_step_is_not_training_time(monkeypatch):
    from plugins.training import callbacks

    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    tokens = TokenCounter()
    callback = EngineReportingCallback(RecordingContext(), tokens, None)
    state = SimpleNamespace(global_step=0, epoch=0.0, max_steps=10)
    callback.on_train_begin(None, state, None)
    now[0] = 30.0
    callback.on_evaluate(None, state, None, metrics={"eval_loss": 2.0})
    now[0], tokens.total = 40.0, 500
    state.global_step = 1
    callback.on_log(None, state, None, logs={"loss": 1.0})
    assert callback.history[-1]["tokens_per_second"] == 50.0  # 500 tokens in the 10 s after the evaluation
    assert callback.history[-1]["elapsed_seconds"] == 10.0
