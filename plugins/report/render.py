"""Render the run report as one self-contained HTML file (inline CSS and SVG, no scripts)."""

from __future__ import annotations

from typing import Any

from plugins.report.collect import verification_rows
from plugins.report.svg_chart import line_chart_svg
from plugins.report.template import REPORT_TEMPLATE


def render_report(data: dict[str, Any]) -> str:
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    environment.filters["num"] = format_number
    environment.filters["bytes"] = format_bytes
    environment.filters["answer"] = format_answer
    environment.filters["percent"] = format_percent
    environment.filters["criteria"] = format_criteria
    chart = line_chart_svg(data["loss_series"], title="Loss", x_label="step", y_label="loss")
    evaluation = data.get("evaluation") or {}
    metrics = evaluation.get("metrics") or {}
    tuned, base = metrics.get("fine_tuned") or {}, metrics.get("base") or {}
    metric_rows = [(name, value, base.get(name)) for name, value in tuned.items()]
    return environment.from_string(REPORT_TEMPLATE).render(
        **data,
        loss_chart=chart,
        metric_rows=metric_rows,
        verification=verification_rows(data.get("export") or {}),
    )


def format_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_bytes(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def format_percent(value: Any) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def format_criteria(check: dict[str, Any]) -> str:
    """A behaviour check's criteria in words, e.g. ``any of: "a", "b"; none of: "c"``."""
    parts = [
        f"{label}: " + ", ".join(f'"{phrase}"' for phrase in check[key])
        for key, label in (("any_of", "any of"), ("all_of", "all of"), ("none_of", "none of"))
        if check.get(key)
    ]
    if check.get("regex"):
        parts.append(f"matches /{check['regex']}/")
    return "; ".join(parts)


def format_answer(text: str | None) -> str:
    """A generated answer; an immediate end of turn shows as (empty), a model not run as -."""
    if text is None:
        return "-"
    return text or "(empty answer)"
