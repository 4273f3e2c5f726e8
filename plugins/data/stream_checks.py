"""What ``streaming: true`` refuses at load: options that need the whole dataset, and runs it cannot resume exactly.

Read by the dataset loader's ``check_workflow``; every finding names the key to change. Other
plugins' settings are read by field name (the engine rule: plugins never import each other).
"""

from __future__ import annotations

import os
from typing import Any

from entity_training import Finding

STREAMING_ONLY = ("shuffle_buffer", "validation_rows")


def streaming_findings(config: Any, plugins: list[Any]) -> list[Finding]:
    if not config.streaming:
        return [
            Finding(f"{name} applies to streaming only; set streaming: true or remove it", key=name, error=True)
            for name in STREAMING_ONLY
            if name in config.model_fields_set
        ]
    findings = _loader_findings(config)
    training = _training_setting(plugins, "max_steps", missing=False)
    if training is None:
        findings.append(
            _refused(
                "num_epochs needs the dataset's length, which a stream does not know; set training_config.max_steps"
            )
        )
    if (_training_setting(plugins, "dataloader_num_workers", missing=0) or 0) > 0:
        findings.append(
            _refused(
                "dataloader_num_workers > 0 would read the stream in worker processes, whose position a checkpoint "
                "cannot save; set training_config.dataloader_num_workers: 0"
            )
        )
    if any(_name_of(p) == "preference_training" for p in plugins):
        findings.append(_refused("preference_training needs pairs tokenized whole; stream SFT data only"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        findings.append(_refused("a distributed launch: streaming reads in one process for now; launch one process"))
    return findings


def _loader_findings(config: Any) -> list[Finding]:
    findings = []
    if config.shuffle and "shuffle" in config.model_fields_set:
        findings.append(
            Finding(
                "streaming cannot shuffle the whole dataset (it is never all in memory): it shuffles within "
                "shuffle_buffer samples. Remove shuffle, or set it to false",
                key="shuffle",
                error=True,
            )
        )
    if "validation_split" in config.model_fields_set and config.validation_split > 0:
        findings.append(
            Finding(
                "streaming cannot split off a fraction of a dataset whose size it does not know; give "
                "validation_path, or validation_rows (rows held out from the head of the data)",
                key="validation_split",
                error=True,
            )
        )
    if config.validation_path is not None and config.validation_rows:
        findings.append(Finding("give validation_path or validation_rows, not both", key="validation_rows", error=True))
    return findings


def _refused(what: str) -> Finding:
    return Finding(f"streaming is combined with an option that needs the whole dataset or one reader: {what}",
                   key="streaming", error=True)  # fmt: skip


def _training_setting(plugins: list[Any], name: str, *, missing: Any) -> Any:
    """A setting of the workflow's training_config step; ``missing`` when no step has that field."""
    for plugin in plugins:
        if name in type(plugin.config).model_fields:
            return getattr(plugin.config, name)
    return missing


def _name_of(plugin: Any) -> str:
    return getattr(plugin, "name", "") or type(plugin).__name__
