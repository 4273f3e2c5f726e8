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
    environment.filters["share"] = format_share
    environment.filters["criteria"] = format_criteria
    chart = line_chart_svg(data["loss_series"], title="Loss", x_label="step", y_label="loss")
    evaluation = data.get("evaluation") or {}
    metrics = evaluation.get("metrics") or {}
    tuned, base = metrics.get("fine_tuned") or {}, metrics.get("base") or {}
    preference = bool(evaluation.get("preference"))
    metric_rows = [
        (PREFERENCE_LABELS.get(name, name) if preference else name, value, base.get(name))
        for name, value in tuned.items()
    ]
    vs_start = (evaluation.get("preference") or {}).get("vs_start") or {}
    return environment.from_string(REPORT_TEMPLATE).render(
        **data,
        loss_chart=chart,
        reward_chart=_chart(data.get("reward_series"), "Implicit rewards", "reward"),
        reward_accuracy_chart=_chart(data.get("reward_accuracy_series"), "Reward accuracy", "share of pairs"),
        metric_rows=metric_rows,
        reward_rows=[(PREFERENCE_LABELS.get(name, name), value) for name, value in vs_start.items()],
        verification=verification_rows(data.get("export") or {}),
    )


# What each preference figure of the evaluation means (plugins/eval/preference.py).
PREFERENCE_LABELS = {
    "preference_accuracy": "preference accuracy (mean log-prob per answer token)",
    "preference_margin": "margin, log-prob per answer token",
    "preference_accuracy_summed": "preference accuracy (summed log-prob)",
    "preference_margin_summed": "margin, summed log-prob",
    "chosen_logp": "chosen answers, log-prob per token",
    "rejected_logp": "rejected answers, log-prob per token",
    "desirable_logp": "desirable completions, log-prob per token",
    "undesirable_logp": "undesirable completions, log-prob per token",
    "reward_accuracy": "reward accuracy (chosen gained more than rejected)",
    "reward_margin": "reward margin, chosen - rejected",
    "chosen_reward": "reward of the chosen answers",
    "rejected_reward": "reward of the rejected answers",
    "desirable_rose": "desirable completions whose log-prob rose",
    "undesirable_fell": "undesirable completions whose log-prob fell",
    "moved_right": "completions that moved the way their label asks",
    "desirable_reward": "reward of the desirable completions",
    "undesirable_reward": "reward of the undesirable completions",
    "beta": "beta (reward = beta x log-ratio)",
}


def _chart(series: dict[str, Any] | None, title: str, y_label: str) -> str | None:
    return line_chart_svg(series, title=title, x_label="step", y_label=y_label) if series else None


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


def format_share(value: Any) -> str:
    """A share of a mixture, to 0.1%: its targets are compared with what was realised."""
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


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
