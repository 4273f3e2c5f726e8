"""RunReportPlugin (OUTPUT, last): ``report.html`` in the run directory.

One self-contained file that opens offline: configuration, dataset statistics, loss curves (an
inline SVG), evaluation metrics base vs fine-tuned, sample generations, export verification,
the inference benchmark and the time taken by each plugin. Sections for stages that did not run
are shown as empty, so the report also documents partial runs.
"""

from __future__ import annotations

from pydantic import Field

from entity_training import PluginConfig, Stage
from entity_training.plugin import Plugin

REPORT_FILE = "report.html"


class RunReportPlugin(Plugin):
    name = "run_report"
    description = "Write report.html: config, data, loss curves, evaluation, samples, exports, timings."
    supported_stages = (Stage.OUTPUT,)
    run_after_review_failure = True  # a failed evaluation is exactly when the report is needed
    dependencies = ()
    provides = ()

    class ConfigModel(PluginConfig):
        file_name: str = Field(REPORT_FILE, min_length=1, description="Report file name inside the run directory.")

    async def _execute_impl(self, context) -> str:
        from entity_training.memory import atomic_write_text
        from entity_training.secrets import redact
        from plugins.report.collect import collect_report_data
        from plugins.report.render import render_report

        data = collect_report_data(context.recall, context.run_dir, context.run_settings)
        path = context.run_dir / self.config.file_name
        atomic_write_text(path, redact(render_report(data)))  # a second guard: no secret in the page
        context.summarize("report", str(path))
        return f"wrote {path}"
