"""Time our data pipeline against TRL's SFTTrainer dataset preparation, cold and warm, in one run.

    python benchmarks/preprocess.py [--max-length 1024] [--model tiny] [--repeats 3] [--warm-repeats 20]

Both sides use the same tokenizer (loaded once, outside the timings) and a ChatML template, train
on assistant tokens only and pack rows of at most --max-length tokens. Runs alternate between the
two sides; the table gives medians. What each timing includes:

- ours cold: ``load_conversations`` (read the file, detect the format, normalise and validate every
  row, write the parse cache) + ``prepare_tokenized`` (render the chat template, tokenize, mask,
  pack, write the tokenized cache entry) + opening the train split's arrays memory-mapped (what
  training does first), with both caches empty.
- ours warm: the same calls with both caches filled: stat the file against the file-digest index
  and read the parsed rows back (marshal); the cache key from the loaded list's digest, the
  tokenizer's digest (remembered for the stat of its files, taken when it was loaded) and the
  options; check the entry's files against its manifest; open the arrays memory-mapped.
- TRL cold: ``datasets.load_dataset("json")`` of the same rows in TRL's own format (empty datasets
  cache) + ``SFTTrainer(...)`` with ``SFTConfig(max_length=..., packing=True)``, whose constructor
  tokenizes, masks and packs, and builds the Trainer around the model.
- TRL warm: the same with the datasets cache filled: ``load_dataset`` finds its Arrow files by the
  data files' fingerprint, and every ``map`` in the constructor hits its fingerprint cache; the
  Trainer is still built (its fixed cost is measured on a two-row dataset and printed).

The table is also written into benchmarks/RESULTS.md (section ``preprocess``) unless --no-write.
Needs ../shared/datasets (alpaca_en_demo.json, glaive_toolcall_en_demo.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK = Path(tempfile.mkdtemp(prefix="preprocess-bench-"))
os.environ["HF_DATASETS_CACHE"] = str(WORK / "hf-datasets")  # before `datasets` is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from benchmarks.common import (  # noqa: E402
    SHARED_DATASETS,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    write_section,
)
from plugins.data.convert import to_format  # noqa: E402
from plugins.data.dataset import load_conversations  # noqa: E402
from plugins.data.preparation import PreparationOptions, prepare_tokenized  # noqa: E402
from plugins.data.templates import CHATML  # noqa: E402
from plugins.data.tokenized import load_tokenized  # noqa: E402
from plugins.data_preparation import load_tokenizer_for  # noqa: E402

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
    parser.add_argument("--repeats", type=int, default=3, help="cold runs of each side (alternating)")
    parser.add_argument("--warm-repeats", type=int, default=20, help="warm runs of each side (alternating)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 cold and 3 warm runs, no RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warm_repeats, args.no_write = 1, 3, True
    return args


SETTLE_SECONDS = 0.3  # between runs: the previous run's worker threads (torch, tokenizers) stop spinning


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # CPU time of this process (all threads) during the run: robust to a busy machine


def timed(function, *args) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def alternating(repeats: int, ours_run, trl_run) -> tuple[list[Timing], list[Timing]]:
    """``repeats`` runs of each side, taking turns, so that both see the same machine load."""
    ours_times, trl_times = [], []
    for _ in range(repeats):
        for run, times in ((ours_run, ours_times), (trl_run, trl_times)):
            time.sleep(SETTLE_SECONDS)
            times.append(run())
    return ours_times, trl_times


# -- ours ---------------------------------------------------------------------------------------


def ours(path: Path, tokenizer, tokenizer_files, max_length: int, cache_dir: Path, parts: list | None = None):
    """Our pipeline; with ``parts``, append the CPU seconds of its three steps (load, key and check, open)."""
    clock = [time.process_time()]
    conversations = load_conversations([path], cache_dir=cache_dir / "loaded").conversations
    clock.append(time.process_time())
    options = PreparationOptions(max_seq_length=max_length, chat_template="chatml")
    prepared = prepare_tokenized(
        conversations, [], tokenizer, options, cache_dir=cache_dir / "tokenized", tokenizer_files=tokenizer_files
    )
    clock.append(time.process_time())
    load_tokenized(prepared.tokenized["train"])
    clock.append(time.process_time())
    if parts is not None:
        parts.append([after - before for before, after in pairwise(clock)])
    return prepared


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
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return trainer.train_dataset


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# -- the run --------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """No progress bars, info logs or deprecation notes from datasets/transformers/TRL: the table stays readable."""
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main() -> int:
    args = parse_args()
    if not all((SHARED_DATASETS / name).is_file() for name in DATASETS):
        print(f"{SHARED_DATASETS} lacks {' or '.join(DATASETS)}: nothing to benchmark", file=sys.stderr)
        return 2
    load_start = load_average()
    print(f"load average at start: {load_start}")
    quiet_libraries()
    import transformers
    import trl

    from plugins.models import load_causal_lm

    tokenizer, tokenizer_files = load_tokenizer_for(args.model)
    trl_tokenizer, _ = load_tokenizer_for(args.model)
    trl_tokenizer.chat_template = CHATML_WITH_GENERATION
    model = load_causal_lm(args.model)
    print(
        f"model {args.model}, vocab {len(tokenizer)}, max_length {args.max_length}, trl {trl.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs; tokenizer files known: "
        f"{tokenizer_files is not None}"
    )

    fresh = iter(range(10**6))
    overhead_rows = write_jsonl(
        WORK / "overhead.jsonl",
        [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hello"}]}]
        * 2,
    )
    overhead_cache = WORK / "trl-overhead"
    trl_prepare(overhead_rows, model, trl_tokenizer, args.max_length, False, overhead_cache)  # imports, first use
    overhead = median(
        [
            timed(trl_prepare, overhead_rows, model, trl_tokenizer, args.max_length, False, overhead_cache)[0].wall
            for _ in range(args.warm_repeats)
        ]
    )

    results = []
    for name in DATASETS:
        path = SHARED_DATASETS / name
        rows = trl_rows(path)
        jsonl = write_jsonl(WORK / f"{path.stem}.trl.jsonl", rows)
        assistant_only = "messages" in rows[0]

        parts: list[list[float]] = []

        def ours_run(cache: Path, path=path, parts=None) -> Timing:
            return timed(ours, path, tokenizer, tokenizer_files, args.max_length, cache, parts)[0]

        def trl_run(cache: Path, jsonl=jsonl, assistant_only=assistant_only) -> Timing:
            return timed(trl_prepare, jsonl, model, trl_tokenizer, args.max_length, assistant_only, cache)[0]

        # Cold: every run starts from an empty cache folder (ours) / datasets cache (TRL).
        cold = alternating(
            args.repeats, lambda: ours_run(WORK / f"ours-{next(fresh)}"), lambda: trl_run(WORK / f"trl-{next(fresh)}")
        )
        # Warm: the caches of one more cold run of each side are present.
        ours_cache, trl_cache = WORK / f"ours-{next(fresh)}", WORK / f"trl-{next(fresh)}"
        prepared = ours(path, tokenizer, tokenizer_files, args.max_length, ours_cache)
        trl_dataset = trl_prepare(jsonl, model, trl_tokenizer, args.max_length, assistant_only, trl_cache)
        warm = alternating(args.warm_repeats, partial(ours_run, ours_cache, parts=parts), partial(trl_run, trl_cache))
        assert ours(path, tokenizer, tokenizer_files, args.max_length, ours_cache).cache_hit
        results.append((name, cold, warm, parts, prepared.stats["train"], len(trl_dataset)))

    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(results, overhead, args, tokenizer_files is not None, load_start, load_end)
    print("\n" + report)
    if not args.no_write:
        write_section("preprocess", report)
    return 0


def render(results, overhead: float, args, tokenizer_files_known: bool, load_start: str, load_end: str) -> str:
    rows = []
    for name, cold, warm, *_ in results:
        ours_cold, trl_cold = ([t.wall for t in side] for side in cold)
        ours_warm, trl_warm = ([t.wall for t in side] for side in warm)
        ours_cpu, trl_cpu = (median([t.cpu for t in side]) for side in warm)
        rows.append(
            [
                name,
                f"{median(ours_cold):.3f}",
                f"{median(trl_cold):.3f}",
                f"**{median(trl_cold) / median(ours_cold):.1f}x**",
                f"{median(ours_warm) * 1e3:.1f} (min {min(ours_warm) * 1e3:.1f})",
                f"{median(trl_warm) * 1e3:.1f} (min {min(trl_warm) * 1e3:.1f})",
                f"**{median(trl_warm) / median(ours_warm):.1f}x**",
                f"{ours_cpu * 1e3:.1f} / {trl_cpu * 1e3:.1f} = {trl_cpu / ours_cpu:.1f}x",
            ]
        )
    headers = [
        "dataset",
        "ours cold s",
        "TRL cold s",
        "cold ratio",
        "ours warm ms",
        "TRL warm ms",
        "warm ratio",
        "warm CPU ms ours / TRL",
    ]
    lines = [
        "## Preprocessing: ours vs TRL SFTTrainer, cold and warm cache (benchmarks/preprocess.py)",
        "",
        f"Load, chat template, tokenize, mask and pack each file at max_length {args.max_length} with the tokenizer "
        f"of the built-in `{args.model}`; medians of {args.repeats} cold and {args.warm_repeats} warm runs per side, "
        f"alternating, {SETTLE_SECONDS} s apart. Ratio = TRL time / our time (higher is better for us), from wall "
        "times; the last column compares the CPU time each side's process spent, which a busy machine distorts "
        "less (a short run is hit harder by waiting for a core). Targets: cold >= 1x, warm >= 10x.",
        "",
        markdown_table(headers, rows),
        "",
        "What each side's time includes:",
        "",
        "- **ours cold**: read, detect and validate the rows, write the parse cache; render, tokenize, mask, pack, "
        "write the tokenized entry; open the train arrays memory-mapped. Both caches empty.",
        "- **ours warm**: stat the file against the file-digest index, read the parsed rows back (marshal); cache key "
        "from the loaded list's digest, the tokenizer digest remembered for its files' stat "
        f"(known for this tokenizer: {'yes' if tokenizer_files_known else 'no, hashed by content'}) and the options; "
        "check the entry's files against its manifest; open the train arrays memory-mapped.",
        "- **TRL cold**: `load_dataset('json')` of the same rows in TRL's format into an empty datasets cache, then "
        "`SFTTrainer(...)` (tokenize, mask, pack, build the Trainer).",
        "- **TRL warm**: the same with the datasets cache filled (`load_dataset` and every `map` hit their "
        f"fingerprint cache); the Trainer is still built: on a two-row dataset that alone takes {overhead * 1e3:.1f} ms.",
        "",
    ]
    for name, *_, parts, stats, trl_rows_count in results:
        load, key, arrays = (median([run[step] for run in parts]) * 1e3 for step in range(3))
        lines.append(
            f"- {name}: ours {stats['samples']} samples -> {stats['rows']} rows, {stats['tokens']:,} tokens "
            f"({stats['trained_tokens']:,} trained), packing {stats['packing_efficiency']:.1%}; TRL {trl_rows_count} "
            f"rows. Our warm CPU ms by step (medians): read the parsed rows {load:.1f}, cache key and entry check "
            f"{key:.1f}, open the arrays {arrays:.1f}"
        )
    lines += ["", "### Machine", "", machine_lines(machine_info(), load_start, load_end)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
