"""The mixture of sources as a rich table: the target share of each source, and what was realised."""

from __future__ import annotations

from typing import Any


def mixing_loader_config(workflow) -> Any | None:
    """The config of the workflow's loader step that mixes several sources, if any (read by field name)."""
    for step in workflow.steps:
        if getattr(step.plugin.config, "sources", None) is not None:
            return step.plugin.config
    return None


def print_mixture(realised: dict[str, Any] | None, loader_config: Any, console) -> None:
    """One row per source: its weight and target share, then (when the data was prepared) its rows,
    the passes over its own rows (above 1: repeated), its trained tokens and the realised shares of both."""
    from rich.table import Table

    weights = {source.label: source.weight for source in loader_config.sources}
    total = sum(weights.values())
    table = Table(title=f"Mixture of sources, by {loader_config.mix_by} (training split)")
    for column in ("source", "weight", "target"):
        table.add_column(column, justify="left" if column == "source" else "right")
    if realised:
        for column in ("rows", "passes", "share of rows", "trained tokens", "share of tokens"):
            table.add_column(column, justify="right")
    for name, weight in weights.items():
        row = [name, f"{weight:g}", f"{weight / total:.1%}"]
        if realised:
            entry = realised["sources"][name]
            row += [
                f"{entry['rows']:,}",
                f"{entry['passes']:g}",
                f"{entry['share_rows']:.1%}",
                f"{entry['trained_tokens']:,}",
                f"{entry['share_tokens']:.1%}",
            ]
        table.add_row(*row)
    if not realised:
        table.caption = "targets only: the workflow prepares no data (no data_preparation step)"
    console.print(table)
