"""The one place tests write workflow files.

``write_workflow`` builds the standard pipeline (the sample data, the built-in ``tiny`` model, data
preparation, fine-tuning) with each test's settings on top, so a change to that pipeline is made
here once. ``write_yaml`` writes literal text, for the tests whose subject is the text itself
(malformed YAML, tags, the line a problem is reported on in a hand-laid file).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO / "data" / "sample.jsonl"

# What THINK runs in a workflow that trains, in order: a new preparation or planning plugin is added
# here once, and every training workflow the tests build runs it.
THINK_STEPS = ("data_preparation", "memory_plan")
STANDARD_STAGES = ("INPUT", "PARSE", "THINK", "DO")


def step(plugin: str, **config) -> dict:
    """One step of a stage: ``step("evaluation", num_samples=0)``."""
    return {"plugin": plugin, "config": config} if config else {"plugin": plugin}


def write_workflow(
    folder: Path,
    *,
    dataset: Mapping | None = None,
    training: Mapping | None = None,
    preparation: Mapping | None = None,
    stop_after: str = "DO",
    review: Iterable[dict] = (),
    output: Iterable[dict] = (),
    stages: Mapping[str, Iterable[dict]] | None = None,
    run: Mapping | None = None,
    plugin_dirs: Iterable[str | Path] | None = None,
    name: str = "wf.yaml",
) -> Path:
    """Write a workflow file into ``folder`` and return its path.

    ``dataset``, ``training`` and ``preparation`` are settings laid over the defaults of the
    dataset_loader, training_config and data_preparation steps. The standard stages run up to
    ``stop_after`` (INPUT, PARSE, THINK or DO); ``review`` and ``output`` are the steps of those
    stages. ``stages`` replaces the whole pipeline, for workflows of other plugins.

    Every mapping is written one key per line in the order given, and every list of plain values
    on one line, so a test can find the line of a key with ``line_of``.
    """
    if stages is None:
        stages = _standard_stages(dataset, training, preparation, stop_after)
        stages.update({stage: steps for stage, steps in (("REVIEW", review), ("OUTPUT", output)) if steps})
    elif dataset or training or preparation or review or output:
        raise ValueError("stages replaces the standard pipeline: put every step in it")
    document: dict = {}
    if run is not None:
        document["run"] = dict(run)
    if plugin_dirs is not None:
        document["plugin_dirs"] = list(plugin_dirs)
    document["workflow"] = {stage: list(steps) for stage, steps in stages.items()}
    return write_yaml(folder, yaml.dump(_plain(document), Dumper=_Dumper, sort_keys=False), name)


def write_yaml(folder: Path, text: str, name: str = "wf.yaml") -> Path:
    """Write ``text`` (dedented) as a workflow file, for tests about the text itself."""
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` that holds ``text``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def _standard_stages(dataset, training, preparation, stop_after: str) -> dict[str, list[dict]]:
    if stop_after not in STANDARD_STAGES:
        raise ValueError(f"stop_after must be one of {STANDARD_STAGES}, got {stop_after!r}")
    # A workflow that stops after THINK only prepares the data: there is no training to plan.
    think = THINK_STEPS if stop_after == "DO" else ("data_preparation",)
    steps = {
        "INPUT": [step("dataset_loader", **{"dataset_path": SAMPLE_DATA, **(dataset or {})})],
        "PARSE": [step("training_config", **{"model_name_or_path": "tiny", **(training or {})})],
        "THINK": [step(name, **(preparation or {})) if name == "data_preparation" else step(name) for name in think],
        "DO": [step("fine_tuning")],
    }
    return {stage: steps[stage] for stage in STANDARD_STAGES[: STANDARD_STAGES.index(stop_after) + 1]}


def _plain(value):
    """Paths as strings and tuples as lists: what a YAML file can hold."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


class _Dumper(yaml.SafeDumper):
    """Block mappings, and lists of plain values on one line (``export_formats: [huggingface, gguf]``)."""

    def represent_list(self, data):
        flat = all(not isinstance(item, dict | list) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _Dumper.represent_list)
