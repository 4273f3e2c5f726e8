"""Every fenced code block in README.md and docs/*.md runs or is validated (docs/CONFIG.md is generated).

What a block is comes from an HTML comment on the line just before its fence, else from its language:

    marker                              check
    <!-- file: PATH -->                 written into its document's sandbox before any block of that document runs
    <!-- run -->                        the same as an unmarked bash block (the marker of docs/API.md's example)
    <!-- yaml: plugin-config NAME -->   a config mapping, validated by plugin NAME's ConfigModel
    <!-- yaml: steps -->                stage -> list of steps; each step validated by its plugin in that stage
    <!-- data: FORMAT -->               dataset rows: the dataset loader reads them all and detects FORMAT
    <!-- layout: run-dir -->            a run directory listing: each name exists in a real run of
                                        configs/default.yaml (the quick start's workflow)
    <!-- not run: REASON -->            skipped with REASON; the repository files it names must exist and
                                        the workflows it names (--config) must validate
    unmarked python                     run as a script in the document's sandbox, the repository on PYTHONPATH
    unmarked yaml                       a whole workflow, loaded and validated by the engine in the sandbox
    unmarked bash/shell/console         every command runs (see ``run_command``) and must exit 0
    unmarked toml                       parsed
Any other block fails: give it a marker.

A document's sandbox is a temporary folder with links to the repository's configs/, data/, scripts/,
benchmarks/, examples/ and train.py, so commands run as written and their outputs land in the
sandbox; the blocks of one document run in order in the same sandbox, as a reader would type them.

Injected into commands (the docs' models are downloaded from the Hub or, for ``small``, pretrained
for minutes on first use): every ``plan``, ``preview`` or training run of a workflow with a model
setting gets ``--model tiny`` (so does ``scripts/estimate_memory.py``, which is ``plan``); training
runs also get ``--max-steps 2``, ``--yes`` and, when the workflow has an evaluation step,
``--set evaluation.on_fail=continue`` (two steps of a toy model do not pass real thresholds).
Blocks with a run of a workflow that trains (a fine_tuning step) are marked slow.

``pytest -rA tests/docs/test_docs_code_blocks.py`` shows the inventory: how many blocks ran, were
validated, or were not run and why.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "CONFIG.md")]
SANDBOX_LINKS = ("configs", "data", "scripts", "benchmarks", "examples", "train.py")
TRAINING_SUBCOMMANDS = ("run", "plan", "preview")  # the commands that load a model
SCRIPT_SUBCOMMANDS = {"scripts/estimate_memory.py": "plan"}  # scripts that are a subcommand under another name

FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(?P<kind>file|run|yaml|data|layout|not run)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    body: str
    kind: str  # the marker's kind, or "" when unmarked
    arg: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}:{self.lang or 'text'}"

    @property
    def check(self) -> str:
        """What the test does with the block (the inventory's categories)."""
        if self.kind == "file":
            return "sandbox file"
        if self.kind == "not run":
            return "not run"
        if self.kind in ("yaml", "data", "layout"):
            return f"validated ({self.kind})"
        if self.kind == "run" or self.lang in ("bash", "shell", "sh", "console"):
            return "ran (commands)"
        if self.lang == "python":
            return "ran (python)"
        if self.lang in ("yaml", "yml"):
            return "validated (workflow)"
        if self.lang == "toml":
            return "validated (toml)"
        return "unchecked"


def code_blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = MARKER.match(before[-1].strip()) if before else None
        blocks.append(
            Block(
                doc=doc,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match.group("lang").lower(),
                body=match.group("body"),
                kind=marker.group("kind") if marker else "",
                arg=(marker.group("arg") or "").strip() if marker else "",
            )
        )
    return blocks


def doc_blocks(doc: Path) -> tuple[dict[str, str], list[str]]:
    """A document's ``file:`` blocks by path and its ``run`` blocks' command lines."""
    blocks = code_blocks(doc)
    files = {b.arg: b.body for b in blocks if b.kind == "file"}
    commands = [line for b in blocks if b.kind == "run" for line in command_lines(b.body)]
    return files, commands


ALL_BLOCKS = [block for doc in DOCS for block in code_blocks(doc)]


def command_lines(body: str, console: bool = False) -> list[str]:
    """The commands of a shell block: continuation lines joined; console blocks keep only `$ ` lines."""
    joined = body.replace("\\\n", " ")
    lines = joined.splitlines()
    if console:
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line for line in lines if shlex.split(line, comments=True)]


# -- sandbox and commands ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    made: dict[Path, Path] = {}

    def sandbox(doc: Path) -> Path:
        if doc not in made:
            root = tmp_path_factory.mktemp(doc.stem.lower())
            for name in SANDBOX_LINKS:
                (root / name).symlink_to(REPO / name)
            for block in code_blocks(doc):
                if block.kind == "file":
                    (root / block.arg).parent.mkdir(parents=True, exist_ok=True)
                    (root / block.arg).write_text(block.body, encoding="utf-8")
            made[doc] = root
        return made[doc]

    return sandbox


NOT_RUNNING = {"--dry-run", "--help", "-h"}  # options with which a run command runs nothing


def cli_argv(args: list[str]) -> list[str] | None:
    """The arguments of ``entity_training.cli.main`` for ``entity-train ...`` or ``python train.py ...``."""
    if args[0] == "entity-train":
        return args[1:]
    if args[:2] in (["python", "train.py"], ["python3", "train.py"]):
        return args[2:]
    return None


def subcommand_of(argv: list[str]) -> str:
    from entity_training.cli import command_names

    return argv[0] if argv and argv[0] in command_names() else "run"


def _workflow_argument(argv: list[str]) -> str | None:
    if argv and argv[0] in ("run", "validate", "plan", "preview"):
        return next((a for a in argv[1:] if not a.startswith("-")), None)
    for flag in ("--config", "-c"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return None


def injected_arguments(argv: list[str], cwd: Path) -> list[str]:
    """What the test adds to an entity-train / train.py command so that it runs here (see the module doc)."""
    from entity_training.workflow import load_workflow

    subcommand = subcommand_of(argv)
    config = _workflow_argument(argv)
    if subcommand not in TRAINING_SUBCOMMANDS or config is None or NOT_RUNNING & set(argv):
        return []
    steps = load_workflow(cwd / config).steps
    settings = {name for step in steps for name in type(step.plugin.config).model_fields}
    extra = ["--model", "tiny"] if "model_name_or_path" in settings else []
    if subcommand == "run":
        extra += ["--max-steps", "2", "--yes"] if "max_steps" in settings else ["--yes"]
        if any(step.reference == "evaluation" for step in steps):
            extra += ["--set", "evaluation.on_fail=continue"]
    return extra


def is_training_run(args: list[str], doc: Path) -> bool:
    """A run of a workflow with a fine_tuning step (its file in the repository or a `file:` block of ``doc``)."""
    argv = cli_argv(args)
    if argv is None or subcommand_of(argv) != "run" or NOT_RUNNING & set(argv):
        return False
    config = _workflow_argument(argv)
    documented = doc_blocks(doc)[0]
    text = documented[config] if config in documented else (REPO / str(config)).read_text(encoding="utf-8")
    return any(
        step.get("plugin") == "fine_tuning" for steps in yaml.safe_load(text)["workflow"].values() for step in steps
    )


def run_command(command: str, cwd: Path) -> tuple[int, str]:
    """Run one documented command in ``cwd``; returns (exit code, output).

    ``entity-train ...`` and ``python train.py ...`` call ``entity_training.cli.main`` in this
    process (the function the console script and train.py call), with the injected arguments;
    other ``python SCRIPT`` commands (and ``train.py --help``, whose text depends on the program
    name) run in a subprocess with the repository on PYTHONPATH.
    """
    args = shlex.split(command, comments=True)
    argv = cli_argv(args)
    if argv is not None and not (args[0] != "entity-train" and "--help" in argv):
        from entity_training.cli import main

        argv += injected_arguments(argv, cwd)
        output = io.StringIO()
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            # main() sets environment defaults for its process; this process goes on with other tests.
            with patch.dict(os.environ), contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                code = main(argv)
        finally:
            os.chdir(previous)
        return code, output.getvalue()
    if args[0] in ("python", "python3"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        if args[1] in SCRIPT_SUBCOMMANDS:
            args += injected_arguments([SCRIPT_SUBCOMMANDS[args[1]], *args[2:]], cwd)
        done = subprocess.run(
            [sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        return done.returncode, done.stdout + done.stderr
    raise AssertionError(
        f"cannot run {args[0]!r} here; if the block cannot run in a test, mark it `<!-- not run: REASON -->`"
    )


# -- checks per kind ------------------------------------------------------------------------------
def check_commands(block: Block, sandbox: Path) -> None:
    for command in command_lines(block.body, console=block.lang == "console"):
        code, output = run_command(command, sandbox)
        assert code == 0, f"{block.id}: `{command}` exited {code}:\n{output[-4000:]}"


def check_python(block: Block, sandbox: Path) -> None:
    script = sandbox / f"block_{block.line}.py"
    script.write_text(block.body, encoding="utf-8")
    code, output = run_command(f"python {script.name}", sandbox)
    assert code == 0, f"{block.id} failed:\n{output[-4000:]}"


def check_workflow(block: Block, sandbox: Path) -> None:
    from entity_training.workflow import load_workflow

    path = sandbox / f"block_{block.line}.yaml"
    path.write_text(block.body, encoding="utf-8")
    assert load_workflow(path).steps


def _plugin(reference: str, sandbox: Path):
    from entity_training.registry import resolve_plugin

    return resolve_plugin(reference, [sandbox]).cls


def check_yaml_fragment(block: Block, sandbox: Path) -> None:
    from entity_training.stages import Stage

    data = yaml.safe_load(block.body)
    what, _, name = block.arg.partition(" ")
    if what == "plugin-config":
        _plugin(name.strip(), sandbox)(data)
        return
    assert what == "steps", f"{block.id}: unknown yaml marker {block.arg!r} (plugin-config NAME or steps)"
    for stage_name, steps in data.items():
        stage = Stage.parse(stage_name)
        for step in steps:
            cls = _plugin(step["plugin"], sandbox)
            assert stage in cls.supported_stages, f"{step['plugin']} cannot run in {stage.value}"
            cls(step.get("config") or {})


def check_data(block: Block, sandbox: Path) -> None:
    from plugins.data.dataset import load_conversations

    path = sandbox / f"block_{block.line}.jsonl"
    path.write_text(block.body, encoding="utf-8")
    dataset = load_conversations([path])
    (report,) = dataset.files
    assert report.format == block.arg, f"{block.id}: detected {report.format!r} ({report.reason})"
    assert report.rows == len(block.body.strip().splitlines()) and not dataset.bad_rows


def layout_names(body: str) -> list[str]:
    """The names of a run-directory listing: the first column of each indented line, split at ' / '."""
    names = []
    for line in body.splitlines()[1:]:
        first_column = re.split(r"\s{2,}", line.strip())[0]
        names += [name.strip() for name in first_column.split(" / ") if name.strip()]
    return names


def check_layout(block: Block, sandbox: Path) -> None:
    run_dir = sandbox / "outputs" / "layout-check"
    code, output = run_command(f"python train.py --config configs/default.yaml --output {run_dir}", sandbox)
    assert code == 0, output[-4000:]
    names = layout_names(block.body)
    for name in names:
        path = run_dir / name.rstrip("/")
        assert path.is_dir() if name.endswith("/") else path.is_file(), f"{block.id}: a run has no {name}"
    listed = {name.rstrip("/") for name in names}
    unlisted = sorted(p.name for p in run_dir.iterdir() if p.name not in listed)
    assert not unlisted, f"{block.id}: the run also wrote {unlisted}; add them to the listing"


REPO_PATH = re.compile(r"^(configs|scripts|data|examples|docs|benchmarks)/\S+$")


def check_not_run(block: Block) -> None:
    from entity_training.workflow import load_workflow

    assert len(block.arg.split()) >= 3, f"{block.id}: say why the block is not run (`<!-- not run: REASON -->`)"
    for command in command_lines(block.body) if block.lang in ("bash", "shell", "sh") else []:
        args = shlex.split(command, comments=True)
        named = [a for a in args if REPO_PATH.match(a) and "*" not in a]
        for name in named:
            assert (REPO / name).exists(), f"{block.id}: `{command}` names {name}, which does not exist"
        config = _workflow_argument(args[args.index("train.py") + 1 :]) if "train.py" in args else None
        if config:
            load_workflow(REPO / config)


def check_toml(block: Block, sandbox: Path) -> None:
    """Parsed; entry points are declared in the group the engine reads, and name a module:Class."""
    from entity_training.command import COMMAND_ENTRY_POINT_GROUP
    from entity_training.registry import ENTRY_POINT_GROUP

    tomllib = pytest.importorskip("tomllib", reason="tomllib (Python 3.11+) parses TOML")
    data = tomllib.loads(block.body)
    groups = data.get("project", {}).get("entry-points", {})
    known = {ENTRY_POINT_GROUP, COMMAND_ENTRY_POINT_GROUP}
    assert set(groups) <= known, f"{block.id}: entry points outside {known}: {set(groups)}"
    for group in known:
        for target in groups.get(group, {}).values():
            assert re.fullmatch(r"[\w.]+:\w+", target), f"{block.id}: {target!r} is not module:Class"


CHECKS = {
    "ran (commands)": check_commands,
    "ran (python)": check_python,
    "validated (workflow)": check_workflow,
    "validated (yaml)": check_yaml_fragment,
    "validated (data)": check_data,
    "validated (layout)": check_layout,
    "validated (toml)": check_toml,
}


def _is_slow(block: Block) -> bool:
    if block.kind == "layout":
        return True
    if block.check != "ran (commands)":
        return False
    return any(is_training_run(shlex.split(c, comments=True), block.doc) for c in command_lines(block.body))


def _params():
    checked = [b for b in ALL_BLOCKS if b.kind != "file"]  # file blocks are used by their document's commands
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if _is_slow(b) else []) for b in checked]


# -- tests ------------------------------------------------------------------------------------------
def test_inventory_every_block_has_a_check():
    counts = Counter(block.check for block in ALL_BLOCKS)
    reasons = [f"  {block.id}: {block.arg}" for block in ALL_BLOCKS if block.kind == "not run"]
    commands = sum(len(command_lines(b.body)) for b in ALL_BLOCKS if b.check == "ran (commands)")
    print(f"{len(ALL_BLOCKS)} code blocks in {len(DOCS)} documents ({commands} commands run):")
    for check, count in sorted(counts.items()):
        print(f"  {check}: {count}")
    print("not run, with reasons:", *reasons, sep="\n")
    unchecked = [block.id for block in ALL_BLOCKS if block.check == "unchecked"]
    assert not unchecked, f"blocks with no check (add a marker, see tests/docs/test_docs_code_blocks.py): {unchecked}"
    assert counts["ran (commands)"] and counts["validated (workflow)"]


@pytest.mark.parametrize("block", _params())
def test_code_block(block: Block, sandboxes):
    assert block.check != "unchecked", f"{block.id}: no check for this block; give it a marker (see the module doc)"
    if block.kind == "not run":
        check_not_run(block)
        pytest.skip(f"{block.id} not run: {block.arg}")
    CHECKS[block.check](block, sandboxes(block.doc))


def test_the_training_guide_covers_every_setting_of_the_built_in_plugins():
    """docs/TRAINING_GUIDE.md names every key (in backticks, as plugin.key, or in a YAML example)."""
    from entity_training.registry import DISTRIBUTION, entry_point_plugins, resolve_plugin

    guide = (REPO / "docs" / "TRAINING_GUIDE.md").read_text(encoding="utf-8")
    missing = [
        f"{name}.{key}"
        for name in sorted(entry_point_plugins(DISTRIBUTION))
        for key in resolve_plugin(name, []).cls.ConfigModel.model_fields
        if not re.search(rf"`(\w+\.)?{key}\b|^\s*{key}:", guide, re.M)
    ]
    assert not missing, f"say in docs/TRAINING_GUIDE.md when to change: {missing}"
