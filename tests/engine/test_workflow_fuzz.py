"""Random workflow documents never produce anything but a workflow or our own ConfigError."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entity_training.errors import ConfigError
from entity_training.overrides import parse_set_argument
from entity_training.workflow import Workflow, load_workflow

KEYS = [
    "run",
    "workflow",
    "plugin_dirs",
    "plugin",
    "config",
    "name",
    "seed",
    "output_dir",
    "input",
    "DO",
    "think",
    "OUTPUT",
    "ERROR",
    "count",
    "label",
    "rate",
    "mode",
    "sample_plugins.Writer",
    "sample_plugins.Recorder",
    "x",
]
PLUGINS = [
    "sample_plugins.Writer",
    "sample_plugins.Summer",
    "sample_plugins.Recorder",
    "sample_plugins.Calculator",
    "dataset_loader_missing",
    "sample_plugins",
    "os.system",
    "builtins.eval",
    "",
    "${HOME}",
    "${NOPE}",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**12),
    st.floats(allow_nan=True),
    st.sampled_from(PLUGINS),
    st.text(max_size=12),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)


def plausible_workflows():
    step = st.fixed_dictionaries(
        {"plugin": st.sampled_from(PLUGINS)},
        optional={"config": st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3)},
    )
    return st.fixed_dictionaries(
        {
            "workflow": st.dictionaries(
                st.sampled_from(["input", "PARSE", "do", "Output", "ERROR", "train"]),
                st.lists(step, max_size=3),
                max_size=4,
            )
        },
        optional={"run": st.dictionaries(st.sampled_from(["name", "seed", "output_dir", "sed"]), scalars, max_size=3)},
    )


def check(tmp_path, text: str, overrides=()) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text)
    try:
        result = load_workflow(path, list(overrides), env={"HOME": "/home/x"})
    except ConfigError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        assert str(exc)
    else:
        assert isinstance(result, Workflow)


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(documents)
def test_random_documents(tmp_path, document):
    check(tmp_path, yaml.safe_dump(document, allow_unicode=True))


@fuzz
@given(plausible_workflows())
def test_plausible_workflows(tmp_path, document):
    check(tmp_path, yaml.safe_dump(document))


@fuzz
@given(st.text(max_size=200))
def test_random_text(tmp_path, text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    check(tmp_path, text)


@fuzz
@given(st.binary(max_size=120))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_workflow(path)
    except ConfigError:
        pass


@fuzz
@given(st.text(alphabet="abcw.=01[]{}:-_ ", max_size=30))
def test_random_set_arguments(tmp_path, argument):
    try:
        override = parse_set_argument(argument)
    except ConfigError:
        return
    check(tmp_path, "workflow:\n  input:\n    - plugin: sample_plugins.Writer\n", [override])
