"""Faults a long run meets: pre-emption signals, damaged state, a full disk, a second run.

The fast tests use the real plugins in-process (tiny model, a few steps) or a toy workflow
through the CLI; the signal tests run the real fine_tuning plugin through the CLI (slow).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers.cli import run_train as cli
from helpers.export_fixtures import fill_memory_for_export, make_lora_adapter, trained_model_dir  # noqa: F401
from helpers.training import build_tiny_model_dir, packed_rows, plan_memory, write_tokenized
from helpers.workflows import step, write_workflow

from entity_training import PluginError, Stage
from entity_training.disk import as_disk_full
from entity_training.memory import Memory
from entity_training.testing import make_context
from plugins import memory_keys
from plugins.fine_tuning import FineTuningPlugin
from plugins.training.checkpoints import checkpoint_problems, list_checkpoints
from plugins.training_config import TrainingConfigPlugin

REPO = Path(__file__).resolve().parents[2]
ENGINE_TESTS = REPO / "tests" / "engine"  # sample_plugins: the engine's toy plugins


def _write_toy_workflow(folder: Path, *, steps: int = 600) -> Path:
    """The engine's toy plugins: a writer, then a sleeper of ``steps`` short steps."""
    return write_workflow(
        folder,
        run={"name": "toy", "output_dir": "out"},
        stages={"INPUT": [step("sample_plugins.Writer")], "DO": [step("sample_plugins.Sleeper", steps=steps)]},
    )


def _write_training_workflow(folder: Path, *, max_steps: int = 12, save_steps: int = 100, output=()) -> Path:
    """The real training plugins on the tiny model, run through the CLI."""
    return write_workflow(
        folder,
        run={"name": "signal-test", "output_dir": "run", "seed": 42},
        dataset={"validation_split": 0.1},
        training={"batch_size": 2, "max_steps": max_steps, "save_steps": save_steps, "logging_steps": 1},
        preparation={"max_seq_length": 256},
        output=output,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    return write_tokenized(
        tmp_path_factory.mktemp("tokenized"), packed_rows(8), packed_rows(4, seed=1), max_seq_length=64
    )


async def _train(run_dir: Path, model: str, tokenized: dict, *, events: list | None = None, **settings) -> dict:
    torch.manual_seed(0)
    memory = Memory()
    defaults = {"model_name_or_path": model, "batch_size": 4, "logging_steps": 2, "save_steps": 2, "seed": 0}
    await TrainingConfigPlugin({**defaults, **settings}).execute(make_context(Stage.PARSE, run_dir, memory))
    memory.set(memory_keys.DATASET_TOKENIZED, tokenized)
    await plan_memory(run_dir, memory, events=events)
    context = make_context(Stage.DO, run_dir, memory, events=events, cancel_event=threading.Event())
    plugin = FineTuningPlugin({})
    try:
        await plugin.execute(context)
    finally:
        await plugin.cleanup(context)
    return memory.get(memory_keys.TRAINING_RESULT)


# -- damaged checkpoints ----------------------------------------------------------------------


async def test_a_checkpoint_without_trainer_state_is_skipped_for_the_previous_one(tiny_model, tokenized, tmp_path):
    await _train(tmp_path, tiny_model, tokenized, max_steps=4, save_total_limit=5)
    newest = tmp_path / "checkpoints" / "checkpoint-4"
    (newest / "trainer_state.json").unlink()
    assert "trainer_state.json is missing" in checkpoint_problems(newest)
    events: list = []
    result = await _train(
        tmp_path, tiny_model, tokenized, events=events, max_steps=4, save_total_limit=5, resume_from_checkpoint="auto"
    )
    assert result["resumed_from"].endswith("checkpoint-2") and result["steps"] == 4
    assert any("skipping checkpoint checkpoint-4" in e.get("message", "") for e in events if e["type"] == "warning")


# -- a full disk --------------------------------------------------------------------------------


async def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tiny_model, tokenized, tmp_path, monkeypatch):
    original = torch.save

    def full_disk_at_step_4(obj, target, *args, **kwargs):
        # The Trainer writes optimizer.pt / scheduler.pt / rng_state.pth of a checkpoint with torch.save.
        if "checkpoint-4" in str(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return original(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_step_4)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below, with its message
        await _train(tmp_path, tiny_model, tokenized, max_steps=6, save_total_limit=5)
    message = str(caught.value)
    assert isinstance(caught.value, (OSError, PluginError)) or "space" in message.lower(), repr(caught.value)
    assert "No space left on device" in message or "disk" in message.lower(), message
    explained = as_disk_full(caught.value, run_dir=tmp_path, writer="fine_tuning (DO)")  # what the CLI prints
    assert explained is not None and explained.exit_code == 1
    assert "checkpoint-4" in str(explained) and "continue with --resume" in str(explained)
    published = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert published == ["checkpoint-2"]
    assert checkpoint_problems(tmp_path / "checkpoints" / "checkpoint-2") == []


FULL_DISK_PLUGIN = """
import errno, os
from entity_training import Plugin, Stage

class FillDisk(Plugin):
    supported_stages = (Stage.DO,)

    async def _execute_impl(self, context):
        target = context.run_dir / "weights.bin"
        kind = os.environ["FULL_DISK_KIND"]
        if kind == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        if kind == "quota":
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        # what safetensors (Rust) raises: its own type, the OS text, no errno
        raise RuntimeError("Error while serializing: IoError(No space left on device (os error 28))")
"""


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("oserror", "the disk is full: fill_disk (DO) could not write {run_dir}/weights.bin"),
        ("quota", "the disk quota is exceeded: fill_disk (DO) could not write its files in {run_dir}"),
        ("rust_library", "the disk is full: fill_disk (DO) could not write its files in {run_dir}"),
    ],
)
def test_a_full_disk_reaches_the_cli_as_one_message_with_the_place_and_what_to_do(tmp_path, kind, expected):
    (tmp_path / "plugs" / "fill_disk").mkdir(parents=True)
    (tmp_path / "plugs" / "fill_disk" / "plugin.py").write_text(FULL_DISK_PLUGIN)
    write_workflow(
        tmp_path,
        run={"name": "full", "output_dir": "out"},
        plugin_dirs=["plugs"],
        stages={"INPUT": [step("sample_plugins.Writer")], "DO": [step("fill_disk")]},
    )
    result = cli("--config", "wf.yaml", "--yes", cwd=tmp_path, env={"FULL_DISK_KIND": kind})
    run_dir = tmp_path / "out"
    message = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected.format(run_dir=run_dir) in message, message
    assert f"free in {run_dir}" in message and f"continue with --resume {run_dir}" in message
    assert (
        "--output on a disk with room" in message
        and "Earlier checkpoints, exports and the run state are intact" in message
    )
    assert "Traceback" not in result.stdout + result.stderr and "unexpected" not in message
    run = json.loads((run_dir / "run.json").read_text())
    assert run["error"]["type"] == "DiskFull" and run["exit_code"] == 1


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a real small file system (tmpfs); needs root (CAP_SYS_ADMIN), else the test skips."""
    mounted: list[Path] = []

    def mount(size: str, *, read_only: bool = False) -> Path:
        mount_point = tmp_path / f"disk-{len(mounted)}"
        mount_point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)])
        if result.returncode != 0:
            pytest.skip("mounting a tmpfs needs root: the real full-disk tests run only where that is allowed")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_really_full_disk_stops_training_cleanly_and_resume_finishes(tmp_path, small_disk):
    """A tiny-model checkpoint is 2.7 MB: checkpoint-2 fits on 4 MiB, checkpoint-4 does not."""
    _write_training_workflow(tmp_path, max_steps=6, save_steps=2)
    disk = small_disk("4m")
    run_dir = disk / "run"
    stopped = cli("--config", "wf.yaml", "--yes", "--output", str(run_dir), cwd=tmp_path, timeout=600)
    message = " ".join(stopped.stderr.split())
    assert stopped.returncode == 1, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert f"the disk is full: fine_tuning (DO) could not write its files in {run_dir}" in message, message
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["checkpoint-2"]
    assert checkpoint_problems(run_dir / "checkpoints" / "checkpoint-2") == []

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
    resumed = cli("--config", "wf.yaml", "--yes", "--resume", str(run_dir), cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((run_dir / "memory.json").read_text())["entries"]["training.result"]
    assert result["steps"] == 6 and result["resumed_from"].endswith("checkpoint-2")


@pytest.mark.slow
def test_no_room_for_the_merged_model_is_refused_before_writing(tmp_path, small_disk):
    """export output_path on a 64 KiB disk: the merge pre-flight refuses it (exit 2), nothing is written there."""
    export_dir = small_disk("64k") / "export"
    _write_training_workflow(
        tmp_path, max_steps=1, output=[step("model_export", export_formats=["merged"], output_path=export_dir)]
    )
    result = cli("--config", "wf.yaml", "--yes", cwd=tmp_path, timeout=600)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "not enough disk space for the merged model" in message and "output_path" in message, message
    assert "Traceback" not in result.stdout + result.stderr
    assert not export_dir.exists() or not any(export_dir.iterdir())


def test_a_run_directory_on_a_read_only_disk_is_refused_before_anything_runs(tmp_path, small_disk):
    """Root ignores permission bits, so a read-only mount is what makes a folder unwritable for every user."""
    _write_toy_workflow(tmp_path)
    run_dir = small_disk("64k", read_only=True) / "run"
    result = cli("--config", "wf.yaml", "--yes", "--output", str(run_dir), cwd=tmp_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{run_dir}: cannot create the run directory" in message and "read-only file system" in message
    assert "Traceback" not in result.stdout + result.stderr


# -- damaged run state, two runs --------------------------------------------------------------


def test_truncated_memory_json_stops_resume_with_the_file_and_what_to_do(tmp_path):
    _write_toy_workflow(tmp_path, steps=2)
    assert cli("--config", "wf.yaml", cwd=tmp_path).returncode == 0
    memory_file = tmp_path / "out" / "memory.json"
    memory_file.write_bytes(memory_file.read_bytes()[:-25])  # cut short, as by a crash mid-write on another FS
    result = cli("--config", "wf.yaml", "--resume", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert str(memory_file) in message and "Delete it" in message
    assert "Traceback" not in result.stdout + result.stderr


def test_resume_takes_over_a_dead_runs_lock_even_before_its_first_stage_ended(tmp_path):
    """SIGKILL during INPUT leaves run.lock and events.jsonl, no memory.json: --resume starts over."""
    _write_toy_workflow(tmp_path, steps=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text(json.dumps({"pid": int(dead.stdout)}))
    (run_dir / "events.jsonl").write_text(json.dumps({"type": "run_start", "time": 0.0}) + "\n")
    plain = cli("--config", "wf.yaml", cwd=tmp_path)
    assert plain.returncode == 2 and "--resume" in plain.stderr  # a plain re-run points at --resume
    resumed = cli("--config", "wf.yaml", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "success"
    assert not (run_dir / "run.lock").exists()


def test_a_second_run_into_the_same_directory_is_refused_with_the_first_pid(tmp_path):
    _write_toy_workflow(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENGINE_TESTS), str(REPO)])}
    first = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", "wf.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "out" / "run.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = cli("--config", "wf.yaml", "--output", "out", "--resume", cwd=tmp_path)
        assert second.returncode == 2
        assert f"pid {first.pid}" in " ".join(second.stderr.split())
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 143
    assert json.loads((tmp_path / "out" / "run.json").read_text())["exit_code"] == 143


# -- pre-emption: SIGINT / SIGTERM during real training ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_saves_a_checkpoint_and_resume_finishes(tmp_path, signum, code):
    _write_training_workflow(tmp_path)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", "wf.yaml", "--yes"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        events = (run_dir / "events.jsonl").read_text() if (run_dir / "events.jsonl").exists() else ""
        if '"step": 2,' in events and '"loss"' in events:  # training is under way, long before step 12
            break
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and "--resume" in stderr
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["exit_code"] == code
    saved = list_checkpoints(run_dir / "checkpoints")
    assert saved and checkpoint_problems(saved[-1]) == []  # save_steps is 100: this one was written on the signal
    interrupted_at = int(saved[-1].name.rsplit("-", 1)[1])
    assert 2 <= interrupted_at < 12

    resumed = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", "wf.yaml", "--yes", "--resume"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((run_dir / "memory.json").read_text())["entries"]["training.result"]
    assert result["steps"] == 12 and result["resumed_from"].endswith(f"checkpoint-{interrupted_at}")


# -- a full disk during export ------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
async def test_disk_full_during_export_keeps_the_previous_export(
    make_context,
    tmp_path,
    trained_model_dir,  # noqa: F811 - the fixture imported above
    monkeypatch,
):
    from plugins.model_export import ModelExportPlugin

    make_lora_adapter(trained_model_dir, tmp_path / "final-model")
    memory = Memory()
    fill_memory_for_export(memory, tmp_path / "final-model", str(trained_model_dir))

    async def export() -> None:
        plugin = ModelExportPlugin({"export_formats": ["huggingface", "merged"], "verify_prompts": 1})
        context = make_context(Stage.OUTPUT, memory=memory, run_dir=tmp_path)
        await plugin.initialize(context)
        await plugin.execute(context)

    await export()
    export_root = tmp_path / "export"
    before = _tree(export_root)
    assert any(name.startswith("merged/") for name in before)

    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The merged weights are written with safetensors (through transformers' save_pretrained).
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", full_disk, raising=False)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the message is what matters
        await export()
    assert "No space left on device" in str(caught.value), repr(caught.value)
    explained = as_disk_full(caught.value, run_dir=tmp_path, writer="model_export (OUTPUT)")  # what the CLI prints
    assert explained is not None and f"could not write its files in {tmp_path}" in str(explained)
    assert _tree(export_root) == before  # the previous export, byte for byte, and no partial folder
