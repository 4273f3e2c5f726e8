"""Datasets on the Hugging Face Hub, named ``hf://owner/name[:config][@split]``.

They load through ``datasets.load_dataset``, so its cache is used: offline
(``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) a dataset loaded once before is read from there, and
one never loaded is an InputError that says how to get it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from entity_training import InputError, Problem

HUB_PREFIX = "hf://"
# owner/name, then an optional :config and an optional @split (e.g. train, train[:1000])
_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.\[\]:%-]+))?$")
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class HubDataset:
    """One split of a Hub dataset; ``str()`` gives the ``hf://`` path it was named by."""

    repo: str
    config: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo}" + (f":{self.config}" if self.config else "") + f"@{self.split}"


def is_hub_path(path: str) -> bool:
    return path.startswith(HUB_PREFIX)


def parse_hub_path(path: str, *, key: str = "dataset_path") -> HubDataset:
    """The dataset an ``hf://`` path names; raises InputError for one that is not of that form."""
    match = _SPEC.match(path.removeprefix(HUB_PREFIX))
    if match is None:
        raise InputError(
            Problem(
                f"{path!r} is not a Hub dataset path; write hf://owner/name, optionally with :config and @split "
                f"(hf://owner/name:config@train). Check {key}."
            )
        )
    return HubDataset(match["repo"], match["config"], match["split"] or "train")


def read_hub_rows(dataset: HubDataset) -> list[dict[str, Any]]:
    """The rows of one split, through the ``datasets`` cache. Raises InputError when it cannot be had."""
    import datasets

    try:
        loaded = datasets.load_dataset(dataset.repo, dataset.config, split=dataset.split)
    except Exception as exc:  # the hub client and datasets raise many types; all mean "cannot get it" here
        raise InputError(Problem(_cannot_load(dataset, exc))) from exc
    rows = loaded.to_list()
    if not rows:
        raise InputError(Problem(f"the Hub dataset {dataset} holds no rows. Name another split or dataset."))
    return rows


def offline() -> bool:
    return any(_is_set(name) for name in _OFFLINE_VARIABLES)


def _is_set(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def _cannot_load(dataset: HubDataset, exc: BaseException) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    get_it = (
        f"Run once with network access so that datasets caches it, or download it (e.g. `hf download "
        f"{dataset.repo} --repo-type dataset --local-dir DIR`) and give its data files as the path instead."
    )
    if offline():
        variables = [name for name in _OFFLINE_VARIABLES if _is_set(name)]
        verb = "is" if len(variables) == 1 else "are"
        return f"{' and '.join(variables)} {verb} set and the Hub dataset {dataset} is not in the datasets cache ({reason}). {get_it}"
    return (
        f"cannot load the Hub dataset {dataset} ({reason}). Check the name, the config and the split, and the "
        f"network. {get_it}"
    )
