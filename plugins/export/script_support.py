"""What scripts/merge_adapter.py, convert_to_gguf.py and benchmark.py share: the same error
handling as the CLI (a message, no traceback, the engine's exit codes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from entity_training import EntityTrainingError
from entity_training.errors import exit_code_of


def run_script(body: Callable[[], Any]) -> int:
    """Run ``body``; print its result as JSON; map typed errors to exit codes (2 = bad input)."""
    try:
        result = body()
    except (EntityTrainingError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        print("interrupted; nothing was published" if interrupted else f"error: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0
