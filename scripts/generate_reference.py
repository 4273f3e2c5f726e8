"""Regenerate docs/CONFIG.md and configs/workflow.schema.json from the plugins' pydantic models.

python scripts/generate_reference.py          # write both files
python scripts/generate_reference.py --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from entity_training.reference import config_reference_markdown  # noqa: E402
from entity_training.schema import workflow_json_schema  # noqa: E402

TARGETS = {
    REPO / "docs" / "CONFIG.md": config_reference_markdown,
    REPO / "configs" / "workflow.schema.json": lambda: json.dumps(workflow_json_schema(), indent=2) + "\n",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Only check that the files are up to date.")
    args = parser.parse_args()
    stale = []
    for path, render in TARGETS.items():
        text = render()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    for path in stale:
        print(f"{path.relative_to(REPO)} is out of date: run python scripts/generate_reference.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
