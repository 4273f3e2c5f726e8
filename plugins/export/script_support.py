"""What scripts/merge_adapter.py, convert_to_gguf.py and benchmark.py share: the same error
handling as the CLI (a message, no traceback, the engine's exit codes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from entity_training import EntityTrainingError


def run_script(body: Callable[[], Any]) -> int:
    """Run ``body``; print its result as JSON; map typed errors to exit codes (2 = bad input)."""
    try:
        result = body()
    except EntityTrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing was published", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0
