"""Typed errors, and the one mapping from a failure to an exit code (``exit_code_of``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, located as precisely as we can."""

    message: str
    file: str | None = None
    line: int | None = None
    path: str | None = None  # YAML path such as workflow.DO[0].config.learning_rate

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        if self.path:
            where = f"{where} ({self.path})" if where else self.path
        return f"{where}: {self.message}" if where else self.message


class EntityTrainingError(Exception):
    """Base class of every error the engine reports without a traceback."""

    exit_code = 1


class ConfigError(EntityTrainingError):
    """The workflow or its configuration is invalid. Carries every problem found at once."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str, *, title: str | None = None):
        if isinstance(problems, (str, Problem)):
            problems = [problems if isinstance(problems, Problem) else Problem(problems)]
        self.problems = list(problems)
        self.title = title
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1 and not self.title:
            return str(self.problems[0])
        head = self.title or f"{len(self.problems)} problems in the configuration"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


class InputError(ConfigError):
    """Bad input data (a dataset file, a model path): same exit code as a bad config."""


class PluginError(EntityTrainingError):
    """A plugin failed while running; the message names the plugin and the stage."""

    def __init__(self, message: str, *, plugin: str | None = None, stage: str | None = None):
        self.plugin = plugin
        self.stage = stage
        prefix = f"{plugin} ({stage}): " if plugin and stage else ""
        super().__init__(prefix + message)


class DiskFull(EntityTrainingError):
    """A write failed because the disk or the user's quota is full (``entity_training.disk``)."""


class ReviewFailed(EntityTrainingError):
    """The run finished but REVIEW decided FAIL; later stages are skipped."""

    exit_code = 3


class RunInterrupted(EntityTrainingError):
    """Ctrl-C or SIGTERM: plugins had the chance to save; the run can be resumed."""

    def __init__(self, message: str = "interrupted", *, signal_number: int = 2):
        self.signal_number = signal_number
        super().__init__(message)

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 128 + self.signal_number


def exit_code_of(error: BaseException) -> int:
    """The process exit code for a failure: the typed error's own, 130 for Ctrl-C, else 1."""
    if isinstance(error, EntityTrainingError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1
