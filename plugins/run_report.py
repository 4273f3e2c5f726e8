"""RunReportPlugin (OUTPUT, last): ``report.html`` in the run directory.

One self-contained file that opens offline: configuration, dataset statistics, loss curves (an
inline SVG), evaluation metrics base vs fine-tuned, sample generations, export verification,
the inference benchmark and the time taken by each plugin. Sections for stages that did not run
are shown as empty, so the report also documents partial runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from entity_training import PluginConfig, Stage
from entity_training.plugin import Plugin
from plugins import memory_keys as keys

REPORT_FILE = "report.html"


class RunReportPlugin(Plugin):
    name = "run_report"
    description = "Write report.html: config, data, loss curves, evaluation, samples, exports, timings."
    supported_stages = (Stage.OUTPUT,)
    run_after_review_failure = True  # a failed evaluation is exactly when the report is needed
    # Every input is optional: sections of stages that did not run are shown empty.
    optional_dependencies = (
        keys.TRAINING_CONFIG,
        keys.TRAINING_MEMORY_PLAN,
        keys.DATASET_STATS,
        keys.DATASET_TOKEN_STATS,
        keys.TRAINING_RESULT,
        keys.EVALUATION_REPORT,
        keys.EXPORT_REPORT,
        keys.INFERENCE_REPORT,
    )

    class ConfigModel(PluginConfig):
        file_name: str = Field(REPORT_FILE, min_length=1, description="Report file name inside the run directory.")

    async def _execute_impl(self, context) -> str:
        from entity_training.memory import atomic_write_text
        from entity_training.secrets import redact
        from plugins.report.collect import ReportInputs, collect_report_data
        from plugins.report.render import render_report

        data = collect_report_data(
            ReportInputs(
                training_config=_as_dict(context.recall(keys.TRAINING_CONFIG)),
                memory_plan=_as_dict(context.recall(keys.TRAINING_MEMORY_PLAN)),
                dataset_stats=context.recall(keys.DATASET_STATS) or {},
                token_stats=context.recall(keys.DATASET_TOKEN_STATS) or {},
                training_result=context.recall(keys.TRAINING_RESULT) or {},
                evaluation=context.recall(keys.EVALUATION_REPORT) or {},
                export=context.recall(keys.EXPORT_REPORT) or {},
                inference=context.recall(keys.INFERENCE_REPORT) or {},
            ),
            context.run_dir,
            context.run_settings,
        )
        path = context.run_dir / self.config.file_name
        atomic_write_text(path, redact(render_report(data)))  # a second guard: no secret in the page
        context.summarize("report", str(path))
        return f"wrote {path}"


def _as_dict(value: Any) -> dict[str, Any]:
    """A typed hand-off (a pydantic model) as the plain data the report shows; None as empty."""
    return value.model_dump(mode="json") if value is not None else {}
