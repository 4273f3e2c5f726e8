"""Shared pieces of the training tests: a tiny Llama in a local folder, packed rows on disk, and
a context factory (``entity_training.testing.make_context``) and a PackedTrainer over them. No
download: everything is built in a second from a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from entity_training import Stage
from entity_training.memory import Memory
from entity_training.testing import make_context

TINY_VOCAB = 256


def build_tiny_model_dir(
    folder: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    intermediate: int | None = None,
    vocab: int | None = None,
    seed: int = 0,
) -> Path:
    """A small LlamaForCausalLM with a byte-level tokenizer, saved as a Hugging Face folder.

    ``vocab`` may exceed the tokenizer's 259 tokens (unused rows), to give the logits a realistic size.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab_map = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab_map[special] = len(vocab_map)
    tokenizer = Tokenizer(models.BPE(vocab=vocab_map, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(vocab or 0, len(vocab_map)),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def packed_rows(count: int, *, length: int = 64, samples_per_row: int = 2, seed: int = 0) -> list[dict]:
    """Rows of the tokenized-data contract: repeated patterns a tiny model learns quickly."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        sizes = [length // samples_per_row] * samples_per_row
        sizes[-1] += length - sum(sizes)
        ids, labels, positions = [], [], []
        for size in sizes:
            start = rng.randrange(0, 200)
            sample = [(start + 3 * i) % 200 + 10 for i in range(size)]
            ids += sample
            labels += [-100] + sample[1:]
            positions += list(range(size))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions, "seq_lengths": sizes})
    return rows


def write_tokenized(
    folder: Path, train_rows: list[dict], validation_rows: list[dict] | None, *, max_seq_length: int
) -> dict:
    """Save rows where ``load_tokenized`` reads them and return the ``dataset.tokenized`` entry."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "cache_key": "test",
        "max_seq_length": max_seq_length,
        "chat_template": None,
        "train_on": "assistant",
        "packing": True,
        "validation": None,
    }
    for split, rows in (("train", train_rows), ("validation", validation_rows)):
        if rows is not None:
            entry[split] = str(_write_split(folder / split, rows))
    return entry


def _write_split(folder: Path, rows: list[dict]) -> Path:
    try:
        from plugins.data.tokenized import write_split
    except ImportError:
        folder.with_suffix(".json").write_text(json.dumps(rows))
        return folder.with_suffix(".json")
    import numpy as np

    input_ids, labels, grouping = [], [], []
    for row in rows:
        start, members = 0, []
        for size in row["seq_lengths"]:
            members.append(len(input_ids))
            input_ids.append(np.asarray(row["input_ids"][start : start + size], dtype=np.int32))
            labels.append(np.asarray(row["labels"][start : start + size], dtype=np.int32))
            start += size
        grouping.append(members)
    write_split(folder, grouping, input_ids, labels)
    return folder


def packed_trainer(model, tmp_path: Path, rows: list[dict], *, train: bool = False, **arguments):
    """A PackedTrainer on CPU over packed ``rows`` (the evaluation set, and with ``train`` the
    training set too), no checkpoints or reports; ``arguments`` go to TrainingArguments."""
    from transformers import TrainingArguments

    from plugins.data.collator import PackedCollator
    from plugins.training.callbacks import TokenCounter
    from plugins.training.trainer import PackedTrainer

    return PackedTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"),
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            remove_unused_columns=False,
            prediction_loss_only=True,
            disable_tqdm=True,
            **arguments,
        ),
        train_dataset=rows if train else None,
        eval_dataset=rows,
        data_collator=PackedCollator(pad_token_id=0),
        tokens=TokenCounter(),
        checkpoint_dir=tmp_path / "checkpoints",
        save_total_limit=1,
    )


def resolved_training_config(**settings):
    """A ``training.config`` value as TrainingConfigPlugin stores it, for tests that skip PARSE."""
    from plugins.training_config import ResolvedTrainingConfig

    resolved = {"seed": 0, "precision": "fp32", "device": "cpu", "total_params": 1}
    resolved["model_path"] = settings.get("model_name_or_path", "small")
    return ResolvedTrainingConfig(**{**resolved, **settings})


async def plan_memory(run_dir: Path, memory: Memory, *, events: list | None = None) -> None:
    """The memory_plan plugin (THINK) on what ``memory`` holds, as a workflow runs it before fine_tuning."""
    from plugins.memory_planning import MemoryPlanPlugin

    await MemoryPlanPlugin().execute(make_context(Stage.THINK, run_dir, memory, events=events))


async def run_do_plugin(
    plugin,
    run_dir: Path,
    model: str,
    tokenized: dict,
    *,
    training: dict,
    resume: bool = False,
    events: list | None = None,
    cancel_at_step: int | None = None,
    memory: Memory | None = None,
) -> Memory:
    """TrainingConfig (``training`` and the model), the memory plan on ``tokenized``, then the DO
    ``plugin``, as a workflow runs them; ``cancel_at_step`` presses 'Ctrl-C' (the engine's cancel
    event) once progress reaches that step. ``memory``: what earlier steps left (e.g. a
    ``training.result``), default empty. Returns the memory."""
    import threading

    import torch

    from plugins import memory_keys
    from plugins.training_config import TrainingConfigPlugin

    torch.manual_seed(0)
    cancel = threading.Event()

    def press_ctrl_c(event):
        if cancel_at_step is not None and event["type"] == "progress" and event["completed"] >= cancel_at_step:
            cancel.set()

    memory = Memory() if memory is None else memory
    await TrainingConfigPlugin({"model_name_or_path": model, **training}).execute(
        make_context(Stage.PARSE, run_dir, memory)
    )
    memory.set(memory_keys.DATASET_TOKENIZED, tokenized)
    await plan_memory(run_dir, memory, events=events)
    context = make_context(
        Stage.DO, run_dir, memory, resume=resume, events=events, sinks=(press_ctrl_c,), cancel_event=cancel
    )
    try:
        await plugin.execute(context)
    finally:
        await plugin.cleanup(context)
    return memory
