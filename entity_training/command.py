"""``entity-train`` subcommands contributed by packages (the built-in plugins among them).

A package registers a ``Command`` subclass in the entry-point group ``entity_training.commands``;
the entry point's name is the subcommand's name (``entity-train NAME ...``). The class is
constructed with no arguments whenever the command line is parsed, so its module should import
nothing heavy at the top: import inside ``run``.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import ClassVar

from entity_training.errors import EntityTrainingError

COMMAND_ENTRY_POINT_GROUP = "entity_training.commands"


class Command:
    help: ClassVar[str] = ""  # one line, shown by `entity-train --help`

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments (``entity_training.arguments`` has the workflow ones). Default: none."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work and return the exit code. Raise the typed errors of ``entity_training.errors``:
        the CLI prints them and maps them to exit codes in one place."""
        raise NotImplementedError(f"{type(self).__name__} must implement run")


class _Unavailable(Command):
    """A contributed command that failed to load: the CLI still starts, and the command says why."""

    def __init__(self, reason: str):
        self.help = f"(unavailable: {reason})"  # type: ignore[misc]
        self._reason = reason

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        parser.add_argument("--debug", action="store_true", help="Show tracebacks.")

    def run(self, args: argparse.Namespace) -> int:
        raise EntityTrainingError(self._reason)


def contributed_commands(reserved: Iterable[str] = ()) -> dict[str, Command]:
    """The installed packages' commands by name, except the ``reserved`` (the engine's own) names."""
    found: dict[str, Command] = {}
    for ep in sorted(entry_points(group=COMMAND_ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name in reserved or ep.name in found:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken package must not take the whole command line down
            found[ep.name] = _Unavailable(
                f"command {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            )
            continue
        if inspect.isclass(obj) and issubclass(obj, Command):
            found[ep.name] = obj()
        else:
            found[ep.name] = _Unavailable(f"command {ep.name!r} ({ep.value}) is not a Command subclass")
    return found
