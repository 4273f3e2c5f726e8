"""The data sources of ``dataset_loader``: one ``dataset_path``, or several weighted ``sources``.

Each source is read with its own format and ``field_map``, shuffled with the seed and cut to its
own ``max_samples``, and split into train and validation on its own (so every source is held out
in proportion to its size, before any mixing). Its name goes into the ``source`` of each of its
conversations, where ``data_preparation`` finds it to mix by weight (``plugins.data.mixture``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from plugins.data.dataset import ConversationDataset
from plugins.data.hub import is_hub_path, parse_hub_path
from plugins.data.mixture import MixUnit
from plugins.data.readers import GLOB_CHARACTERS, expand_paths

DatasetFormat = Literal[
    "auto",
    "alpaca",
    "sharegpt",
    "openai",
    "prompt_completion",
    "text",
    "json",
    "sharegpt_pairs",
    "openai_pairs",
    "prompt_pairs",
    "transcript_pairs",
    "kto_messages",
    "kto_prompt_completion",
]
# The settings a source shares with the single dataset_path form of the loader.
FormatSetting = Annotated[
    DatasetFormat,
    Field(
        description="Row format; auto detects it per file from the keys of the first row. The *_pairs formats are "
        "preference pairs (chosen/rejected), the kto_* formats labelled completions."
    ),
]
FieldMapSetting = Annotated[
    dict[str, str], Field(description="Rename columns before detection: {column in the file: expected name}.")
]
MaxSamplesSetting = Annotated[int | None, Field(gt=0, description="Keep at most this many rows (after shuffling).")]
PATH_DESCRIPTION = (
    "A data file, a folder (searched recursively), a glob of shards (data/*.parquet, **/*.jsonl; sorted), a Hub "
    "dataset (hf://owner/name[:config][@split]), or a list of them."
)


class DataSource(BaseModel):
    """One entry of ``dataset_loader.sources``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | list[str] = Field(..., min_length=1, description=PATH_DESCRIPTION)
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[\w.-]+$",
        description="Name of the source in the statistics and the report; default: the file, folder or dataset name.",
    )
    format: FormatSetting = "auto"
    field_map: FieldMapSetting = {}
    max_samples: MaxSamplesSetting = None
    weight: float = Field(
        1.0,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        description="Its share of the mixture, relative to the other weights (in mix_by units); 0 leaves it out "
        "of training (its validation rows are kept).",
    )

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @property
    def label(self) -> str:
        """Its name, or one derived from its first path."""
        if self.name:
            return self.name
        first = self.paths[0]
        if is_hub_path(first):
            return parse_hub_path(first).repo.split("/")[-1]
        path = Path(first)
        while GLOB_CHARACTERS & set(path.name) and path.parent != path:
            path = path.parent  # data/shards/*.parquet is named shards
        return path.stem or "data"


def duplicate_names(sources: list[DataSource]) -> list[str]:
    labels = [source.label for source in sources]
    return sorted({label for label in labels if labels.count(label) > 1})


@dataclass
class LoadedSource:
    """What one source gave: its conversations (shuffled, cut to max_samples), and how it was read."""

    name: str | None  # None for the single dataset_path form, whose rows carry no source name
    dataset: ConversationDataset
    conversations: list[dict[str, Any]]


def load_sources(
    sources: list[DataSource], load: Callable[[DataSource, str], ConversationDataset], *, seed: int, shuffle: bool
) -> list[LoadedSource]:
    """Read every source with ``load(source, key)``, after checking that every path matches something.

    The check comes first so that a source naming nothing stops the run before any file is parsed.
    """
    for index, source in enumerate(sources):
        expand_paths(source.paths, key=source_key(index, source))
    loaded = []
    for index, source in enumerate(sources):
        dataset = load(source, source_key(index, source))
        for conversation in dataset.conversations:
            conversation["source"] = {**conversation["source"], "name": source.label}
        loaded.append(
            LoadedSource(source.label, dataset, shuffled(dataset.conversations, source.max_samples, seed, shuffle))
        )
    return loaded


def source_key(index: int, source: DataSource) -> str:
    return f"sources[{index}].path (source {source.label!r})"


def shuffled(conversations: list[dict[str, Any]], max_samples: int | None, seed: int, shuffle: bool) -> list[dict]:
    order = list(range(len(conversations)))
    if shuffle:
        random.Random(seed).shuffle(order)
    return [conversations[i] for i in order[:max_samples]]


def mixture_spec(sources: list[DataSource], mix_by: MixUnit, seed: int) -> dict[str, Any]:
    """What ``data_preparation`` mixes by (``dataset.stats["mixture"]``): JSON, part of its cache key."""
    return {"mix_by": mix_by, "weights": {source.label: source.weight for source in sources}, "seed": seed}


def source_statistics(
    sources: list[DataSource], loaded: list[LoadedSource], splits: list[tuple[list[dict], list[dict]]]
) -> dict[str, Any]:
    """Per source: its paths, files, weight, rows kept, and rows in each split (``dataset.stats["sources"]``)."""
    return {
        part.name: {
            "path": source.path,
            "files": [file.path for file in part.dataset.files],
            "weight": source.weight,
            "rows": len(part.conversations),
            "train_rows": len(train),
            "validation_rows": len(validation),
        }
        for source, part, (train, validation) in zip(sources, loaded, splits, strict=True)
    }
