"""An installable entity-training plugin: remove duplicate conversations from the training data.

Install it (``pip install examples/plugin_package``) and use it by its entry-point name::

    workflow:
      INPUT:
        - plugin: dataset_loader
          config: {dataset_path: data/sample.jsonl}
        - plugin: deduplicate
"""

from __future__ import annotations

import json

from pydantic import Field

from entity_training import Plugin, PluginConfig, Stage
from plugins.data.conversation_files import read_conversations, write_conversations


class DeduplicatePlugin(Plugin):
    """Drop training rows whose messages repeat an earlier row's (optionally ignoring case)."""

    name = "deduplicate"
    description = "Remove duplicate conversations from dataset.train (runs after dataset_loader)."
    supported_stages = (Stage.INPUT,)
    dependencies = ("dataset.train",)
    provides = ("dataset.train",)

    class ConfigModel(PluginConfig):
        ignore_case: bool = Field(True, description="Treat rows that differ only in letter case as duplicates.")

    def _fingerprint(self, row: dict) -> str:
        text = json.dumps([[m["role"], m["content"]] for m in row["messages"]], ensure_ascii=False)
        return text.lower() if self.config.ignore_case else text

    async def _execute_impl(self, context):
        rows = read_conversations(context.recall("dataset.train"))
        seen: set[str] = set()
        kept = []
        for row in rows:
            key = self._fingerprint(row)
            if key not in seen:
                seen.add(key)
                kept.append(row)
        written = write_conversations(context.run_dir, "train-deduplicated", kept)
        context.remember("dataset.train", written)
        context.summarize("duplicates_removed", len(rows) - len(kept))
        return f"kept {len(kept)} of {len(rows)} rows"
