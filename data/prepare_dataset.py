"""Validate, convert and split dataset files, and print their statistics.

Shares every step with the DatasetLoader plugin (``plugins/data``), so what passes here loads
there. Examples::

    python data/prepare_dataset.py data/sample.jsonl                      # validate + statistics
    python data/prepare_dataset.py raw.json --to openai --output-dir out  # convert + 10% validation split
    python data/prepare_dataset.py a.csv --field-map question=instruction --field-map answer=output --format json

Exit codes: 0 ok, 2 bad input (the message names the file, line and reason).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entity_training import EntityTrainingError  # noqa: E402
from plugins.data.convert import OUTPUT_FORMATS, NotConvertible, to_format  # noqa: E402
from plugins.data.dataset import load_conversations  # noqa: E402
from plugins.data.formats import FORMAT_OPTIONS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths", nargs="+", help="Data files or folders (.jsonl, .json, .parquet, .csv, .txt, save_to_disk)."
    )
    parser.add_argument(
        "--format", default="auto", choices=FORMAT_OPTIONS, help="Input format (default: detect per file)."
    )
    parser.add_argument(
        "--field-map", action="append", default=[], metavar="FROM=TO", help="Rename a column before detection."
    )
    parser.add_argument(
        "--on-bad-rows", default="error", choices=("error", "skip"), help="Stop at bad rows, or drop them."
    )
    parser.add_argument("--text-unit", default="file", choices=("file", "paragraph"), help="Documents in .txt files.")
    parser.add_argument("--to", choices=OUTPUT_FORMATS, help="Write the rows in this format (needs --output-dir).")
    parser.add_argument("--output-dir", type=Path, help="Write train.jsonl, validation.jsonl and stats.json here.")
    parser.add_argument(
        "--validation-split", type=float, default=0.1, help="Held-out fraction in [0, 1) (default 0.1)."
    )
    parser.add_argument("--seed", type=int, default=42, help="Seed of the shuffle before the split.")
    parser.add_argument("--no-shuffle", action="store_true", help="Split in file order.")
    return parser.parse_args(argv)


def field_map_of(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        source, separator, target = pair.partition("=")
        if not separator or not source or not target:
            raise SystemExit(f"--field-map expects FROM=TO, got {pair!r}")
        mapping[source] = target
    return mapping


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dataset = load_conversations(
            args.paths,
            dataset_format=args.format,
            field_map=field_map_of(args.field_map),
            on_bad_rows=args.on_bad_rows,
            text_unit=args.text_unit,
        )
        train, validation = dataset.split(args.validation_split, seed=args.seed, shuffle=not args.no_shuffle)
    except EntityTrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    stats = dataset.statistics() | {"train_rows": len(train), "validation_rows": len(validation)}
    for problem in dataset.bad_rows[:5]:
        print(f"skipped {problem.where}: {problem.reason}", file=sys.stderr)
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    if args.output_dir is None:
        return 0
    fmt = args.to or "openai"
    try:
        for name, rows in (("train", train), ("validation", validation)):
            if rows:
                write_jsonl(args.output_dir / f"{name}.jsonl", [to_format(row, fmt) for row in rows])
    except NotConvertible as exc:
        print(f"error: cannot write {fmt}: {exc}", file=sys.stderr)
        return 2
    (args.output_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
    print(
        f"wrote {len(train)} train and {len(validation)} validation rows ({fmt}) to {args.output_dir}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
