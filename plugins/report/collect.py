"""Gather what the report shows from memory (documented keys) and the run's events.jsonl."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entity_training.executor import EVENTS_FILE


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows from memory; an entry of a stage that did not run is empty."""

    training_config: dict[str, Any] = field(default_factory=dict)
    memory_plan: dict[str, Any] = field(default_factory=dict)
    dataset_stats: dict[str, Any] = field(default_factory=dict)
    token_stats: dict[str, Any] = field(default_factory=dict)
    training_result: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)


def collect_report_data(
    inputs: ReportInputs, run_dir: Path, run_settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the template needs; missing stages simply give empty sections."""
    result = inputs.training_result
    return {
        "run_name": (run_settings or {}).get("name") or Path(run_dir).name,
        "run_dir": str(run_dir),
        "training_config": inputs.training_config,
        "memory_plan": inputs.memory_plan,
        "dataset_stats": flat_items(inputs.dataset_stats),
        "token_stats": flat_items(without_mixture(inputs.token_stats)),
        "mixture": mixture_summary(inputs.token_stats, inputs.dataset_stats),
        "training": {k: v for k, v in result.items() if k != "log_history"},
        "loss_series": loss_series(result.get("log_history") or []),
        "reward_series": history_series(result.get("log_history") or [], REWARD_SERIES),
        "reward_accuracy_series": history_series(result.get("log_history") or [], REWARD_ACCURACY_SERIES),
        "evaluation": inputs.evaluation,
        "export": inputs.export,
        "inference": inputs.inference,
        "timings": plugin_timings(Path(run_dir) / EVENTS_FILE),
    }


LOSS_SERIES = {"training loss": "loss", "validation loss": "eval_loss"}
# Preference training's implicit rewards (plugins/training/preference/trainer.py; for KTO chosen and
# rejected are the desirable and undesirable completions), and the share of pairs they rank right.
REWARD_SERIES = {
    "chosen (training)": "rewards/chosen",
    "rejected (training)": "rewards/rejected",
    "margin (training)": "rewards/margins",
    "margin (validation)": "eval_rewards/margins",
}
REWARD_ACCURACY_SERIES = {"training": "rewards/accuracies", "validation": "eval_rewards/accuracies"}


def loss_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    return history_series(history, LOSS_SERIES)


def history_series(history: list[dict[str, Any]], names: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) points of each logged value in ``names`` (label -> log key); absent ones are left out."""
    series: dict[str, list[tuple[float, float]]] = {label: [] for label in names}
    for record in history:
        step = record.get("step")
        if step is None:
            continue
        for label, key in names.items():
            if isinstance(record.get(key), (int, float)):
                series[label].append((float(step), float(record[key])))
    return {name: points for name, points in series.items() if points}


def plugin_timings(events_path: Path) -> list[dict[str, Any]]:
    """Seconds per plugin (and stage) from the executor's plugin_end events."""
    if not events_path.is_file():
        return []
    rows = []
    for line in events_path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if event.get("type") == "plugin_end":
            rows.append({k: event.get(k) for k in ("stage", "plugin", "status", "seconds")})
    return rows


def flat_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested statistics as (dotted key, value) rows; long lists are summarised by their length."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flat_items(value, name + ".")
        elif isinstance(value, list) and len(value) > 8:
            rows.append((name, f"{len(value)} items"))
        else:
            rows.append((name, value))
    return rows


def without_mixture(token_stats: dict[str, Any]) -> dict[str, Any]:
    """The token statistics less the mixture's (the report shows those in a table of their own)."""
    stats = {key: value for key, value in token_stats.items() if key != "mixture"}
    if isinstance(stats.get("train"), dict):
        stats["train"] = {key: value for key, value in stats["train"].items() if key != "mixture"}
    return stats


def mixture_summary(token_stats: dict[str, Any], dataset_stats: dict[str, Any]) -> dict[str, Any] | None:
    """What the run's mixture of sources realised (from THINK), or only its targets when THINK did not run."""
    realised = token_stats.get("mixture")
    if realised:
        return {"mix_by": realised["mix_by"], "realised": True, "sources": realised["sources"]}
    spec = dataset_stats.get("mixture")
    if not spec:
        return None
    total = sum(spec["weights"].values())
    return {
        "mix_by": spec["mix_by"],
        "realised": False,
        "sources": {name: {"target_share": weight / total} for name, weight in spec["weights"].items()},
    }


def verification_rows(export_report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check of every exported artefact, for the report's verification table."""
    rows = []
    artefacts = export_report.get("artefacts", {})

    def add(artefact: str, check: str, figures: Any, path: str | None = None) -> None:
        if isinstance(figures, dict):
            rows.append({"artefact": artefact, "check": check, "path": path, **figures})
        elif figures is not None:
            rows.append({"artefact": artefact, "check": check, "path": path, "note": str(figures)})

    if "huggingface" in artefacts:
        entry = artefacts["huggingface"]
        add("huggingface", f"reloaded {entry.get('kind', '')} vs trained", entry.get("verification"), entry.get("path"))
    if "merged" in artefacts:
        for check, figures in (artefacts["merged"].get("verification") or {}).items():
            add("merged", check.replace("_", " "), figures, artefacts["merged"].get("path"))
    if "safetensors" in artefacts:
        add(
            "safetensors",
            "reloaded vs source",
            artefacts["safetensors"].get("verification"),
            artefacts["safetensors"].get("path"),
        )
    for quant, entry in artefacts.get("gguf", {}).items():
        if not isinstance(entry, dict) or "quantization" not in entry:
            continue
        reader = entry.get("gguf_reader", {})
        add(
            f"gguf {quant}",
            "GGUFReader",
            {
                "note": f"{reader.get('tensor_count')} tensors, vocab {reader.get('vocab_size')}, chat template matches: {reader.get('chat_template_matches')}"
            },
            entry.get("path"),
        )
        add(f"gguf {quant}", "llama.cpp vs transformers", entry.get("llama_cpp"), entry.get("path"))
    if "ollama" in artefacts:
        entry = artefacts["ollama"]
        add(
            "ollama",
            "Modelfile TEMPLATE renders the training prompt",
            {
                "passed": entry.get("template_verified"),
                "note": f"stop {entry.get('stop')}, num_ctx {entry.get('num_ctx')}",
            },
            entry.get("path"),
        )
    return rows
