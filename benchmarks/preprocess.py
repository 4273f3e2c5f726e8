"""Time our data pipeline against TRL's SFTTrainer dataset preparation, cold and warm, in one run.

Ours: read the file, detect and normalise rows, render the chat template, tokenize, mask and pack,
write the cache (cold) / the same with the cache entry present (warm, a cache hit).
TRL: ``load_dataset("json")`` of the same rows in TRL's own format, then ``SFTTrainer(...)``
with ``SFTConfig(max_length=..., packing=True)``, whose constructor tokenizes, masks and packs
(cold: empty datasets cache / warm: the second construction, hitting the datasets cache).
TRL's constructor also builds the Trainer itself; that overhead is measured on a two-row dataset
and printed beside the table.

    python benchmarks/preprocess.py [--max-length 1024] [--model tiny] [--repeats 3]

Both sides use the same tokenizer and a ChatML template and train on assistant tokens only.
Needs ../shared/datasets (alpaca_en_demo.json, glaive_toolcall_en_demo.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK = Path(tempfile.mkdtemp(prefix="preprocess-bench-"))
os.environ["HF_DATASETS_CACHE"] = str(WORK / "hf-datasets")  # before `datasets` is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from plugins.data.convert import to_format  # noqa: E402
from plugins.data.dataset import load_conversations  # noqa: E402
from plugins.data.preparation import PreparationOptions, prepare_tokenized  # noqa: E402
from plugins.data.templates import CHATML  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = ("alpaca_en_demo.json", "glaive_toolcall_en_demo.json")
# Our ChatML with TRL's {% generation %} markers around each reply and its end token, so that TRL
# masks to the same assistant tokens as we do. Only the message loop (line 4) differs.
_CHATML_LINES = CHATML.split("\n")
_TOOL_CALLS = _CHATML_LINES[3][
    _CHATML_LINES[3].index("{% if message.tool_calls %}") : _CHATML_LINES[3].index("{{ '<|im_end|>")
]
CHATML_WITH_GENERATION = "\n".join(
    [
        *_CHATML_LINES[:3],
        "{% for message in messages[ns.first:] %}{% if message.role == 'assistant' %}"
        "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message.content }}" + _TOOL_CALLS + "{{ '<|im_end|>' }}"
        "{% endgeneration %}{{ '\\n' }}{% else %}"
        "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}",
        *_CHATML_LINES[4:],
    ]
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-length", type=int, default=1024, help="max_seq_length / SFTConfig.max_length")
    parser.add_argument("--model", default="tiny", help="built-in model whose tokenizer both sides use")
    parser.add_argument("--repeats", type=int, default=3, help="cold runs of each side; the fastest is reported")
    parser.add_argument("--warm-repeats", type=int, default=20, help="warm runs of each side (they are short)")
    return parser.parse_args()


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def fastest(repeats: int, function, *args) -> tuple[float, object]:
    """The fastest of ``repeats`` runs (the least disturbed by other work on the machine)."""
    return min((timed(function, *args) for _ in range(repeats)), key=lambda run: run[0])


# -- ours ---------------------------------------------------------------------------------------


def ours(path: Path, tokenizer, max_length: int, cache_dir: Path):
    conversations = load_conversations([path], cache_dir=cache_dir / "loaded").conversations
    options = PreparationOptions(max_seq_length=max_length, chat_template="chatml")
    return prepare_tokenized(conversations, [], tokenizer, options, cache_dir=cache_dir / "tokenized")


# -- TRL ----------------------------------------------------------------------------------------


def trl_rows(path: Path) -> list[dict]:
    """The same conversations in the format TRL reads natively: prompt/completion for single-turn
    files (TRL then trains on the completion only), messages otherwise."""
    conversations = load_conversations([path]).conversations
    if all([m["role"] for m in c["messages"]] == ["user", "assistant"] for c in conversations):
        return [{"prompt": c["messages"][:1], "completion": c["messages"][1:]} for c in conversations]
    rows = []
    for conversation in conversations:
        row = to_format(conversation, "openai")
        for message in row["messages"]:  # one Arrow schema for every row: arguments as JSON text
            for call in message.get("tool_calls") or []:
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        row["tools"] = json.dumps(conversation.get("tools") or [])
        rows.append(row)
    return rows


def trl_prepare(jsonl: Path, model, tokenizer, max_length: int, assistant_only: bool, cache_dir: Path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(cache_dir))
    config = SFTConfig(
        output_dir=str(WORK / "trl-out"),
        max_length=max_length,
        packing=True,
        assistant_only_loss=assistant_only,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return trainer.train_dataset


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# -- the run --------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to benchmark", file=sys.stderr)
        return 2
    import transformers
    import trl

    from plugins.models import load_causal_lm, load_tokenizer

    transformers.logging.set_verbosity_error()
    tokenizer = load_tokenizer(args.model)
    trl_tokenizer = load_tokenizer(args.model)
    trl_tokenizer.chat_template = CHATML_WITH_GENERATION
    model = load_causal_lm(args.model)
    print(
        f"model {args.model}, vocab {len(tokenizer)}, max_length {args.max_length}, trl {trl.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs"
    )

    fresh = iter(range(10**6))
    overhead_rows = write_jsonl(
        WORK / "overhead.jsonl",
        [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hello"}]}]
        * 2,
    )
    overhead_cache = WORK / "trl-overhead"
    trl_prepare(overhead_rows, model, trl_tokenizer, args.max_length, False, overhead_cache)  # imports, first use
    overhead = fastest(
        args.warm_repeats, trl_prepare, overhead_rows, model, trl_tokenizer, args.max_length, False, overhead_cache
    )[0]

    results = []
    for name in DATASETS:
        path = SHARED / name
        rows = trl_rows(path)
        jsonl = write_jsonl(WORK / f"{path.stem}.trl.jsonl", rows)
        assistant_only = "messages" in rows[0]

        # Cold: every run starts from an empty cache folder (ours) / datasets cache (TRL).
        ours_cold = min(
            timed(ours, path, tokenizer, args.max_length, WORK / f"ours-{next(fresh)}")[0] for _ in range(args.repeats)
        )
        trl_cold = min(
            timed(
                trl_prepare, jsonl, model, trl_tokenizer, args.max_length, assistant_only, WORK / f"trl-{next(fresh)}"
            )[0]
            for _ in range(args.repeats)
        )
        # Warm: the caches of one more cold run are present.
        ours_cache, trl_cache = WORK / f"ours-{next(fresh)}", WORK / f"trl-{next(fresh)}"
        _, prepared = timed(ours, path, tokenizer, args.max_length, ours_cache)
        _, trl_dataset = timed(trl_prepare, jsonl, model, trl_tokenizer, args.max_length, assistant_only, trl_cache)
        ours_warm, hit = fastest(args.warm_repeats, ours, path, tokenizer, args.max_length, ours_cache)
        assert hit.cache_hit
        trl_warm = fastest(
            args.warm_repeats, trl_prepare, jsonl, model, trl_tokenizer, args.max_length, assistant_only, trl_cache
        )[0]
        stats = prepared.stats["train"]
        results.append((name, ours_cold, ours_warm, trl_cold, trl_warm, stats, len(trl_dataset)))

    print(f"\nTRL SFTTrainer construction on a two-row dataset (its fixed overhead): {overhead:.3f} s\n")
    header = f"{'dataset':32} {'ours cold':>10} {'TRL cold':>10} {'ratio':>7} {'ours warm':>10} {'TRL warm':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, ours_cold, ours_warm, trl_cold, trl_warm, _, _ in results:
        print(
            f"{name:32} {ours_cold:10.3f} {trl_cold:10.3f} {trl_cold / ours_cold:6.1f}x "
            f"{ours_warm:10.3f} {trl_warm:10.3f} {trl_warm / ours_warm:6.1f}x"
        )
    print(
        f"\nseconds, fastest of {args.repeats} cold / {args.warm_repeats} warm runs; ratio = TRL time / our time (higher is better for us). "
        "TRL's times include building the Trainer (the overhead line above)."
    )
    for name, *_, stats, trl_rows_count in results:
        print(
            f"{name}: ours {stats['samples']} samples -> {stats['rows']} rows, {stats['tokens']:,} tokens "
            f"({stats['trained_tokens']:,} trained), packing {stats['packing_efficiency']:.1%}; TRL {trl_rows_count} rows"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
