"""The workflow file: one schema, interpolation, overrides (entity_training/overrides.py), and
validation of everything at load.

``load_workflow`` either returns a ready ``Workflow`` (every plugin constructed with its validated
config) or raises one ``ConfigError`` listing every problem with file, line and YAML path.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from entity_training.context import ENGINE_KEYS, HandOffs
from entity_training.errors import ConfigError, Problem
from entity_training.interpolation import interpolate
from entity_training.key_map import KEY_PATTERN, KeyMap
from entity_training.overrides import OVERRIDE_HEADS, Override, apply_overrides, plugin_aliases
from entity_training.plugin import Plugin
from entity_training.registry import PluginLookupError, ToolRouter, known_plugin_names, resolve_plugin
from entity_training.stages import ALL_STAGES, Stage
from entity_training.yaml_source import SourceMap, YamlPath, load_yaml_file

ENGINE_RESOURCES = frozenset({"memory", "events", "tools"})


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", min_length=1, description="Name of the run, used in reports and the model card.")
    output_dir: str = Field("outputs/run", min_length=1, description="Run directory (unless --output is given).")
    seed: int = Field(42, ge=0, description="Global random seed for data shuffling, splits and training.")


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugin: str = Field(..., min_length=1, description="Built-in short name, dotted path, or folder plugin name.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        description="The step's own name, unique in the workflow: --set NAME.KEY=VALUE addresses it, and "
        "errors, logs and run.json show it. Needed when a plugin appears twice.",
    )
    memory: dict[str, str] = Field(
        default_factory=dict,
        description="Where this step's memory keys are in the run's memory: a key or a key prefix (whole "
        "dot-separated segments) -> its new name, e.g. {dataset: preference} makes dataset.train "
        "preference.train. The longest matching entry wins.",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="The plugin's settings.")


class WorkflowFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: RunSettings = Field(default_factory=RunSettings, description="Run-wide settings.")
    plugin_dirs: list[str] = Field(default_factory=list, description="Folders holding folder plugins.")
    workflow: dict[str, list[StepSpec]] = Field(..., description="Stage name -> ordered list of plugins.")


@dataclass
class Step:
    stage: Stage
    index: int
    reference: str  # the workflow's `plugin:` value
    plugin: Plugin
    origin: str
    yaml_path: YamlPath
    step_name: str | None = None  # the workflow's `name:` value
    key_map: KeyMap = field(default_factory=KeyMap)  # the workflow's `memory:` mapping

    @property
    def name(self) -> str:
        """How errors, logs, events and run.json call the step: its `name:`, else its `plugin:`."""
        return self.step_name or self.reference

    def keys(self, declaration: str) -> tuple[str, ...]:
        """The plugin's ``dependencies``, ``optional_dependencies`` or ``provides`` as keys in memory."""
        hand_offs = self.hand_offs()
        return tuple(key if key in ENGINE_RESOURCES else hand_offs.in_memory(key) for key in self.declared(declaration))

    def declared(self, declaration: str) -> tuple[str, ...]:
        return tuple(getattr(self.plugin, declaration))

    def hand_offs(self, *, strict: bool | None = None) -> HandOffs:
        return HandOffs.of(self.plugin, strict=strict, key_map=self.key_map)


@dataclass
class Workflow:
    path: Path | None
    run: RunSettings
    plugin_dirs: list[Path]
    steps: list[Step]
    tools: ToolRouter
    raw: dict[str, Any] = field(default_factory=dict)
    notices: list[Problem] = field(default_factory=list)  # adjustments plugins announced at load

    def steps_in(self, stage: Stage) -> list[Step]:
        return [s for s in self.steps if s.stage == stage]

    def plugins(self) -> list[Plugin]:
        return [s.plugin for s in self.steps]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
class _Locator:
    """Turns a YAML path into a Problem, pointing at --set when the value came from the command line."""

    def __init__(self, source: SourceMap, origins: dict[YamlPath, str]):
        self.source = source
        self.origins = origins

    def problem(self, message: str, path: YamlPath) -> Problem:
        for length in range(len(path), 0, -1):
            origin = self.origins.get(tuple(path[:length]))
            if origin:
                return Problem(message, file=origin)
        return self.source.problem(message, path)


def _describe_validation_error(error: dict[str, Any], fields: list[str]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(fields))}"
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return f"required key {str(error['loc'][-1])!r} is missing"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 else type(value).__name__
    return f"{error.get('msg', 'invalid value')} (got {shown})"


def _validation_problems(
    exc: ValidationError, base: YamlPath, model: type[BaseModel], locate: _Locator
) -> list[Problem]:
    return [
        locate.problem(_describe_validation_error(err, _fields_at(model, err["loc"])), (*base, *err["loc"]))
        for err in exc.errors(include_url=False)
    ]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys valid where an error's ``loc`` points: those of the model nested there (``sources[0]``)."""
    for part in loc[:-1]:
        field_info = model.model_fields.get(part) if isinstance(part, str) else None
        if field_info is None:
            continue  # a list index, or the tag pydantic adds for a member of a union
        nested = nested_model(field_info.annotation)
        if nested is None:
            break
        model = nested
    return list(model.model_fields)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds: itself, or inside ``X | None``, ``list[X]`` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(nested_model, typing.get_args(annotation)) if m is not None), None)


def _build_step(
    stage: Stage,
    index: int,
    spec: StepSpec,
    path: YamlPath,
    plugin_dirs: list[Path],
    locate: _Locator,
    problems: list[Problem],
) -> Step | None:
    try:
        source = resolve_plugin(spec.plugin, plugin_dirs)
    except PluginLookupError as exc:
        problems.append(locate.problem(str(exc), (*path, "plugin")))
        return None
    cls = source.cls
    if stage not in cls.supported_stages:
        allowed = ", ".join(s.value for s in cls.supported_stages) or "none"
        problems.append(
            locate.problem(
                f"plugin {spec.plugin!r} cannot run in stage {stage.value}; move it to: {allowed}", (*path, "plugin")
            )
        )
    merged = {**source.defaults, **spec.config}
    try:
        plugin = cls(merged)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, (*path, "config"), cls.ConfigModel, locate))
        return None
    except ConfigError as exc:
        problems.extend(locate.problem(p.message, (*path, "config")) for p in exc.problems)
        return None
    except Exception as exc:
        problems.append(
            locate.problem(
                f"plugin {spec.plugin!r} rejected its config: {type(exc).__name__}: {exc}", (*path, "config")
            )
        )
        return None
    return Step(stage, index, spec.plugin, plugin, source.origin, path, spec.name, KeyMap(dict(spec.memory)))


HAND_OFF_DECLARATIONS = ("dependencies", "optional_dependencies", "provides")


def _providers(dependency: str, plugin_dirs: list[Path]) -> list[str]:
    """Known plugins that provide ``dependency``, each with the stages it can run in."""
    found = []
    for name in known_plugin_names(plugin_dirs):
        try:
            cls = resolve_plugin(name, plugin_dirs).cls
        except PluginLookupError:
            continue
        if dependency in cls.provides:
            found.append(f"`- plugin: {name}` to {' or '.join(stage.value for stage in cls.supported_stages)}")
    return found


def _check_dependencies(steps: list[Step], plugin_dirs: list[Path], locate: _Locator, problems: list[Problem]) -> None:
    """Every key a step needs (in memory, after its `memory:` mapping) is provided by a step before it."""
    provided: set[str] = set()
    for step in steps:
        for own_key, dependency in zip(step.declared("dependencies"), step.keys("dependencies"), strict=True):
            if dependency not in ENGINE_RESOURCES and dependency not in provided:
                problems.append(
                    locate.problem(
                        f"{_describe(step)} needs {dependency!r}{_mapped_from(own_key, dependency)}, which no "
                        f"plugin before it provides{_provider_hint(step, own_key, dependency, steps, plugin_dirs)}",
                        (*step.yaml_path, "plugin"),
                    )
                )
        provided.update(step.keys("provides"))


def _describe(step: Step) -> str:
    return f"plugin {step.reference!r}" + (f" (step {step.step_name!r})" if step.step_name else "")


def _mapped_from(own_key: str, key: str) -> str:
    return f" (its {own_key!r}, renamed by `memory:`)" if own_key != key else ""


def _provider_hint(step: Step, own_key: str, dependency: str, steps: list[Step], plugin_dirs: list[Path]) -> str:
    later = [s.name for s in steps if dependency in s.keys("provides") and s is not step]
    if later:
        return f"; {later[0]!r} provides it but must come earlier"
    providers = _providers(own_key, plugin_dirs)
    if not providers:
        return "; add a plugin that provides it"
    entry = step.key_map.entry_for(own_key)
    mapping = f" with `memory: {{{entry}: {step.key_map.entries[entry]}}}`" if entry else ""
    return f"; add {' or '.join(providers)}{mapping}, before {step.name!r}"


def _check_memory_mappings(steps: list[Step], locate: _Locator, problems: list[Problem]) -> None:
    """Each `memory:` entry renames at least one of the plugin's keys, and none onto an engine key."""
    for step in steps:
        own_keys = {
            key
            for declaration in HAND_OFF_DECLARATIONS
            for key in step.declared(declaration)
            if key not in ENGINE_RESOURCES and key not in ENGINE_KEYS
        }
        for source, target in step.key_map.entries.items():
            where = (*step.yaml_path, "memory", source)
            bad = [text for text in (source, target) if not KEY_PATTERN.match(text)]
            if bad:
                problems.append(
                    locate.problem(
                        f"{bad[0]!r} is not a memory key: write dot-separated names, e.g. dataset.train", where
                    )
                )
                continue
            renamed = step.key_map.matches(source, own_keys)
            if not renamed:
                problems.append(
                    locate.problem(
                        f"`memory: {{{source}: {target}}}` renames none of the keys of {_describe(step)} "
                        f"(it uses: {', '.join(sorted(own_keys)) or 'none'}); map one of them, or one of their "
                        "prefixes such as 'dataset'",
                        where,
                    )
                )
            engine_owned = sorted({step.key_map(key) for key in renamed} & (ENGINE_KEYS | ENGINE_RESOURCES))
            if engine_owned or target in ENGINE_KEYS | ENGINE_RESOURCES:
                problems.append(
                    locate.problem(
                        f"`memory: {{{source}: {target}}}` would rename a key of {_describe(step)} to "
                        f"{(engine_owned or [target])[0]!r}, which the engine owns; choose another name",
                        where,
                    )
                )


def _check_step_names(steps: list[Step], plugin_dirs: list[Path], locate: _Locator, problems: list[Problem]) -> None:
    """`name:` is unique, and no other step's plugin answers to it, so that --set NAME.KEY means one step."""
    seen: dict[str, Step] = {}
    for step in steps:
        if not step.step_name:
            continue
        name = step.step_name.lower()
        where = (*step.yaml_path, "name")
        if name in OVERRIDE_HEADS:
            problems.append(
                locate.problem(
                    f"a step cannot be named {step.step_name!r}; --set uses it for the file's own {name}", where
                )
            )
        elif name in seen:
            problems.append(
                locate.problem(
                    f"two steps are named {step.step_name!r} ({seen[name].stage.value} and {step.stage.value}); "
                    "give each its own name",
                    where,
                )
            )
        else:
            others = [s for s in steps if s is not step and name in plugin_aliases(s.reference, plugin_dirs)]
            if others:
                problems.append(
                    locate.problem(
                        f"the name {step.step_name!r} is also the plugin of another step ({others[0].stage.value}); "
                        "choose another name, so that --set NAME.KEY means one step",
                        where,
                    )
                )
        seen.setdefault(name, step)


def _declarations_are_keys(step: Step, locate: _Locator, problems: list[Problem]) -> bool:
    for declaration in HAND_OFF_DECLARATIONS:
        keys = getattr(step.plugin, declaration)
        # ("dataset.train") is a string, not a tuple: it would be read as one key per letter.
        if isinstance(keys, str) or not all(isinstance(key, str) for key in keys):
            message = f"`{declaration}` of {step.reference!r} must be a tuple of memory keys, e.g. ('dataset.train',)"
            problems.append(locate.problem(f"{message}; got {keys!r}", (*step.yaml_path, "plugin")))
            return False
    return True


def _check_tools(steps: list[Step], router: ToolRouter, locate: _Locator, problems: list[Problem]) -> None:
    owners: dict[str, str] = {}
    for step in steps:
        for name in router.register(step.plugin):
            problems.append(
                locate.problem(
                    f"tool {name!r} is offered by both {owners.get(name, 'another plugin')!r} and {step.name!r}; "
                    "keep only one of them",
                    (*step.yaml_path, "plugin"),
                )
            )
        for name in getattr(step.plugin, "get_tools", dict)():
            owners.setdefault(name, step.name)


def _check_across_plugins(steps: list[Step], locate: _Locator, problems: list[Problem]) -> list[Problem]:
    """Ask each plugin about contradictions with the others; errors join ``problems``, notices are returned."""
    plugins = [step.plugin for step in steps]
    notices: list[Problem] = []
    for step in steps:
        for finding in step.plugin.check_workflow(plugins):
            where = (*step.yaml_path, "config", *finding.key.split(".")) if finding.key else step.yaml_path
            located = locate.problem(f"{step.name}: {finding.message}", where)
            (problems if finding.error else notices).append(located)
    return notices


def load_workflow(
    path: str | Path, overrides: list[Override] | None = None, env: dict[str, str] | None = None
) -> Workflow:
    """Load and validate a workflow file. Raises ConfigError listing every problem."""
    path = Path(path)
    data, source = load_yaml_file(path)
    return build_workflow(data, source, path=path, overrides=overrides, env=env)


def build_workflow(
    data: Any,
    source: SourceMap,
    *,
    path: Path | None = None,
    overrides: list[Override] | None = None,
    env: dict[str, str] | None = None,
) -> Workflow:
    if not isinstance(data, dict):
        raise ConfigError(
            source.problem(
                f"the top level must be a mapping with a `workflow:` section, not a {type(data).__name__}", ()
            )
        )
    problems: list[Problem] = []
    data = interpolate(data, source, problems, env)
    base_dir = path.parent if path else Path.cwd()
    plugin_dirs = _plugin_dirs(data, base_dir)
    origins, override_problems = apply_overrides(data, list(overrides or []), plugin_dirs)
    problems.extend(override_problems)
    plugin_dirs = _plugin_dirs(data, base_dir)
    locate = _Locator(source, origins)

    run, sections = _validate_top_level(data, locate, problems)
    steps: list[Step] = []
    seen_stages: set[Stage] = set()
    for stage_key, specs in sections.items():
        try:
            stage = Stage.parse(stage_key)
        except ValueError as exc:
            problems.append(locate.problem(str(exc), ("workflow", stage_key)))
            continue
        if stage in seen_stages:
            problems.append(
                locate.problem(f"stage {stage.value} is listed twice; merge the two lists", ("workflow", stage_key))
            )
        seen_stages.add(stage)
        for index, spec in specs:
            step = _build_step(stage, index, spec, ("workflow", stage_key, index), plugin_dirs, locate, problems)
            if step:
                steps.append(step)
    if "workflow" in data and not any(specs for specs in sections.values()) and not problems:
        problems.append(locate.problem("the workflow has no plugins; list at least one under a stage", ("workflow",)))
    steps.sort(key=lambda s: (ALL_STAGES.index(s.stage), s.index))
    _check_step_names(steps, plugin_dirs, locate, problems)
    notices: list[Problem] = []
    if not problems:  # otherwise a plugin that failed validation would cascade into false errors
        keyed = [step for step in steps if _declarations_are_keys(step, locate, problems)]
        mapping_problems: list[Problem] = []
        _check_memory_mappings(keyed, locate, mapping_problems)
        problems.extend(mapping_problems)
        if not mapping_problems:  # a wrong mapping would cascade into false missing keys
            _check_dependencies([s for s in keyed if s.stage != Stage.ERROR], plugin_dirs, locate, problems)
        notices = _check_across_plugins(steps, locate, problems)
    router = ToolRouter()
    _check_tools(steps, router, locate, problems)
    if problems:
        raise ConfigError(problems)
    return Workflow(path=path, run=run, plugin_dirs=plugin_dirs, steps=steps, tools=router, raw=data, notices=notices)


def _validate_top_level(
    data: dict[str, Any], locate: _Locator, problems: list[Problem]
) -> tuple[RunSettings, dict[str, list[tuple[int, StepSpec]]]]:
    """Check the top-level keys, `run:`, `plugin_dirs:` and the shape of `workflow:`, collecting problems."""
    top_fields = list(WorkflowFile.model_fields)
    for key in data:
        if key not in top_fields:
            problems.append(
                locate.problem(
                    _describe_validation_error({"type": "extra_forbidden", "loc": (key,)}, top_fields), (key,)
                )
            )
    run = RunSettings()
    try:
        run = RunSettings.model_validate(data.get("run") or {})
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, ("run",), RunSettings, locate))
    dirs = data.get("plugin_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        problems.append(locate.problem("`plugin_dirs` must be a list of folder paths", ("plugin_dirs",)))
    section = data.get("workflow")
    sections: dict[str, list[tuple[int, StepSpec]]] = {}
    if section is None:
        problems.append(
            locate.problem("the `workflow:` section is missing; it maps stage names to lists of plugins", ())
        )
        return run, sections
    if not isinstance(section, dict):
        problems.append(
            locate.problem(
                f"`workflow` must map stage names to lists, not be a {type(section).__name__}", ("workflow",)
            )
        )
        return run, sections
    for stage_key, items in section.items():
        if items is None:
            items = []
        if not isinstance(items, list):
            problems.append(
                locate.problem("a stage must hold a list of `- plugin: ...` entries", ("workflow", stage_key))
            )
            continue
        sections[str(stage_key)] = []
        for index, item in enumerate(items):
            try:
                sections[str(stage_key)].append((index, StepSpec.model_validate(item)))
            except ValidationError as exc:
                problems.extend(_validation_problems(exc, ("workflow", stage_key, index), StepSpec, locate))
    return run, sections


def _plugin_dirs(data: dict[str, Any], base_dir: Path) -> list[Path]:
    dirs = data.get("plugin_dirs") or []
    if not isinstance(dirs, list):
        return []
    resolved = []
    for entry in (d for d in dirs if isinstance(d, str)):
        candidate = Path(entry).expanduser()
        if not candidate.is_absolute():
            # Relative to the workflow file first, then to the working directory.
            beside_file = (base_dir / candidate).resolve()
            candidate = beside_file if beside_file.exists() else candidate.resolve()
        resolved.append(candidate)
    return resolved
