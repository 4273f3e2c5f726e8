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
