"""Time our data pipeline against TRL's SFTTrainer dataset preparation, cold and warm, in one run.

    python benchmarks/preprocess.py [--max-length 1024] [--model tiny] [--repeats 3] [--warm-repeats 8]
    python benchmarks/preprocess.py --generated 100000 --num-proc 2 --repeats 2 --warm-repeats 2

By default it reads the shared Alpaca and glaive demos; ``--generated N`` instead writes N seeded
ShareGPT-style multi-turn rows (2 to 4 exchanges of varied lengths) and times those, with
``--num-proc`` workers on both sides (our ``num_proc``, TRL's ``dataset_num_proc``).

Both sides use the same tokenizer and a ChatML template, train on assistant tokens only and pack
rows of at most --max-length tokens. Every timed run is a fresh process, as a user's next
``train.py`` run is: it imports torch, transformers, datasets and TRL and loads the tokenizer (and
TRL's model) before its timer starts, then runs one side once. Runs alternate between the two
sides; the table gives medians. What each timing includes:

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
    PYTHON,
    SHARED_DATASETS,
    load_average,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    require_ok,
    run_child,
    sharegpt_rows,
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
    parser.add_argument("--warm-repeats", type=int, default=8, help="warm runs of each side (alternating)")
    parser.add_argument("--generated", type=int, metavar="ROWS", help="time N generated multi-turn rows instead")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes for both sides' tokenization")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 cold and 2 warm runs, no RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    # One timed run in this process (what the parent spawns for every measurement).
    parser.add_argument("--child", choices=CHILD_SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--assistant-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warm_repeats, args.no_write = 1, 2, True
    return args


CHILD_SIDES = ("ours", "trl", "trl-overhead")
RESULT_PREFIX = "RESULT "


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # CPU time of this process (all threads) during the run: robust to a busy machine


def timed(function, *args) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def alternating(repeats: int, ours_run, trl_run) -> tuple[list[dict], list[dict]]:
    """``repeats`` runs of each side, taking turns, so that both see the same machine load."""
    ours_runs, trl_runs = [], []
    for _ in range(repeats):
        for run, runs in ((ours_run, ours_runs), (trl_run, trl_runs)):
            runs.append(run())
    return ours_runs, trl_runs


# -- ours ---------------------------------------------------------------------------------------


def ours(
    path: Path, tokenizer, tokenizer_files, max_length: int, cache_dir: Path, num_proc: int, parts: list | None = None
):
    """Our pipeline; with ``parts``, append the CPU seconds of its three steps (load, key and check, open)."""
    clock = [time.process_time()]
    conversations = load_conversations([path], cache_dir=cache_dir / "loaded").conversations
    clock.append(time.process_time())
    options = PreparationOptions(max_seq_length=max_length, chat_template="chatml")
    prepared = prepare_tokenized(
        conversations,
        [],
        tokenizer,
        options,
        cache_dir=cache_dir / "tokenized",
        tokenizer_files=tokenizer_files,
        num_proc=num_proc,
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


def trl_prepare(jsonl: Path, model, tokenizer, max_length: int, assistant_only: bool, cache_dir: Path, num_proc: int):
    import datasets
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(cache_dir))
    config = SFTConfig(
        output_dir=str(WORK / "trl-out"),
        max_length=max_length,
        packing=True,
        assistant_only_loss=assistant_only,
        dataset_num_proc=num_proc if num_proc > 1 else None,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return trainer.train_dataset


def generated_sharegpt(rows: int, seed: int = 0) -> list[dict]:
    """``rows`` ShareGPT conversations of 2 to 4 exchanges, questions of 5-40 words, answers of 20-200."""
    rows_made = sharegpt_rows(seed)
    return [next(rows_made) for _ in range(rows)]


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


def child(args: argparse.Namespace) -> int:
    """One timed run of one side, in a process like a user's: the libraries and the tokenizer first."""
    quiet_libraries()
    # Both sides' processes import the same libraries before the timer, TRL's trainer module too
    # (``trl`` imports it lazily, on first use of SFTTrainer).
    import datasets  # noqa: F401
    import transformers
    import trl
    from trl import SFTConfig, SFTTrainer  # noqa: F401

    from plugins.models import load_causal_lm

    tokenizer, tokenizer_files = load_tokenizer_for(args.model)
    result: dict = {"versions": f"trl {trl.__version__}, transformers {transformers.__version__}"}
    if args.child == "ours":
        parts: list[list[float]] = []
        timing, prepared = timed(
            ours, args.data, tokenizer, tokenizer_files, args.max_length, args.cache, args.num_proc, parts
        )
        result |= {
            "parts": parts[0],
            "cache_hit": prepared.cache_hit,
            "stats": prepared.stats["train"],
            "tokenizer_files_known": tokenizer_files is not None,
        }
    else:
        tokenizer.chat_template = CHATML_WITH_GENERATION
        model = load_causal_lm(args.model)

        def prepare():
            return trl_prepare(
                args.data, model, tokenizer, args.max_length, args.assistant_only, args.cache, args.num_proc
            )

        if args.child == "trl-overhead":  # the Trainer's fixed cost: a two-row dataset, warm, in process
            prepare()
            timing = Timing(median([timed(prepare)[0].wall for _ in range(5)]), 0.0)
        else:
            timing, dataset = timed(prepare)
            result["rows"] = len(dataset)
    print(RESULT_PREFIX + json.dumps({"wall": timing.wall, "cpu": timing.cpu, **result}), flush=True)
    return 0


def run_side(args: argparse.Namespace, side: str, data: Path, cache: Path, *, assistant_only: bool = False) -> dict:
    """Spawn one child run of ``side`` and return what it measured."""
    command = [PYTHON, str(Path(__file__).resolve()), "--child", side, "--data", str(data), "--cache", str(cache)]
    command += ["--model", args.model, "--max-length", str(args.max_length), "--num-proc", str(args.num_proc)]
    if assistant_only:
        command.append("--assistant-only")
    run = run_child(command)
    require_ok(run, f"the {side} run")
    lines = [line for line in run.output.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    if args.generated:
        sources = [write_jsonl(WORK / f"sharegpt_{args.generated}.jsonl", generated_sharegpt(args.generated))]
    elif all((SHARED_DATASETS / name).is_file() for name in DATASETS):
        sources = [SHARED_DATASETS / name for name in DATASETS]
    else:
        print(f"{SHARED_DATASETS} lacks {' or '.join(DATASETS)}: nothing to benchmark", file=sys.stderr)
        return 2
    load_start = load_average()
    print(f"load average at start: {load_start}")
    fresh = iter(range(10**6))
    overhead_rows = write_jsonl(
        WORK / "overhead.jsonl",
        [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hello"}]}]
        * 2,
    )
    overhead = run_side(args, "trl-overhead", overhead_rows, WORK / "trl-overhead")
    print(f"model {args.model}, max_length {args.max_length}, {overhead['versions']}, {os.cpu_count()} CPUs")

    results = []
    for path in sources:
        name = path.name
        rows = trl_rows(path)
        jsonl = write_jsonl(WORK / f"{path.stem}.trl.jsonl", rows)
        assistant_only = "messages" in rows[0]

        def ours_run(cache: Path, path=path) -> dict:
            return run_side(args, "ours", path, cache)

        def trl_run(cache: Path, jsonl=jsonl, assistant_only=assistant_only) -> dict:
            return run_side(args, "trl", jsonl, cache, assistant_only=assistant_only)

        # Cold: every run starts from an empty cache folder (ours) / datasets cache (TRL).
        cold = alternating(
            args.repeats, lambda: ours_run(WORK / f"ours-{next(fresh)}"), lambda: trl_run(WORK / f"trl-{next(fresh)}")
        )
        # Warm: the caches of one more cold run of each side are present.
        ours_cache, trl_cache = WORK / f"ours-{next(fresh)}", WORK / f"trl-{next(fresh)}"
        filled, trl_filled = ours_run(ours_cache), trl_run(trl_cache)
        warm = alternating(args.warm_repeats, partial(ours_run, ours_cache), partial(trl_run, trl_cache))
        if not all(run["cache_hit"] for run in warm[0]):
            raise SystemExit(f"{name}: a warm run of ours missed its cache")
        results.append((name, cold, warm, filled, trl_filled["rows"]))
        print(
            f"{name}: ours warm {median([r['wall'] for r in warm[0]]) * 1e3:.1f} ms, TRL warm "
            f"{median([r['wall'] for r in warm[1]]) * 1e3:.1f} ms"
        )

    load_end = load_average()
    print(f"load average at end: {load_end}")
    report = render(results, overhead["wall"], args, filled["tokenizer_files_known"], load_start, load_end)
    print("\n" + report)
    if not args.no_write:
        write_section("preprocess_generated" if args.generated else "preprocess", report)
    return 0


def render(results, overhead: float, args, tokenizer_files_known: bool, load_start: str, load_end: str) -> str:
    rows = []
    for name, cold, warm, *_ in results:
        ours_cold, trl_cold = ([run["wall"] for run in side] for side in cold)
        ours_warm, trl_warm = ([run["wall"] for run in side] for side in warm)
        ours_cpu, trl_cpu = (median([run["cpu"] for run in side]) for side in warm)
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
    workers = f", {args.num_proc} worker processes a side" if args.num_proc > 1 else ""
    subject = f"{args.generated:,} generated multi-turn rows" if args.generated else "the shared demos"
    lines = [
        f"## Preprocessing {subject}: ours vs TRL SFTTrainer, cold and warm cache (benchmarks/preprocess.py)",
        "",
        f"Load, chat template, tokenize, mask and pack each file at max_length {args.max_length}{workers} with the tokenizer "
        f"of the built-in `{args.model}`; medians of {args.repeats} cold and {args.warm_repeats} warm runs per side, "
        "alternating, each in a fresh process that has imported torch, transformers, datasets and TRL and loaded the "
        "tokenizer (and TRL's model) before its timer starts, as a user's next run does. Ratio = TRL time / our "
        "time (higher is better for us), from wall "
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
    for name, _, warm, filled, trl_rows_count in results:
        stats = filled["stats"]
        load, key, arrays = (median([run["parts"][step] for run in warm[0]]) * 1e3 for step in range(3))
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
