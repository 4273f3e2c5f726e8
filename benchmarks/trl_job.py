"""The TRL side of the benchmarks: a plain ``SFTTrainer`` script, run as a child process.

    python benchmarks/trl_job.py --model DIR --data rows.jsonl --result out.json
        [--packing] [--fp32] [--no-gradient-checkpointing] [--batch-size 8] [--max-length 512]
        [--max-steps N] [--method lora|full] [--use-cpu]

Without --fp32 and --no-gradient-checkpointing, SFTConfig's own defaults apply (bf16 and
gradient checkpointing on); on a CPU, TrainingArguments refuses that bf16 default unless
use_cpu=True ("Your setup doesn't support bf16/gpu. You need to assign use_cpu ..."), which
--use-cpu passes. Writes the trained tokens (labels != -100 of every micro-batch), the
training seconds and the wall-clock time of the first optimizer step to ``--result``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (from_pretrained)")
    parser.add_argument("--data", required=True, help="prompt/completion JSON Lines")
    parser.add_argument("--result", required=True, help="where to write the measurements (JSON)")
    parser.add_argument("--output-dir", default=None, help="TRL's output_dir (default: next to --result)")
    parser.add_argument("--packing", action="store_true", help="packing=True (TRL's BFD, padding-free)")
    parser.add_argument("--fp32", action="store_true", help="bf16=False, fp16=False")
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="gradient_checkpointing=False")
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size")
    parser.add_argument("--max-length", type=int, default=512, help="SFTConfig.max_length")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: one epoch)")
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--use-cpu", action="store_true", help="use_cpu=True (needed for bf16 on a CPU)")
    return parser.parse_args()


def main() -> None:
    started = time.time()
    args = parse_args()
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    first_step: list[float] = []
    trained = [0]

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if not first_step:
                first_step.append(time.time())

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            trained[0] += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    overrides = {}
    if args.fp32:
        overrides.update(bf16=False, fp16=False)
    if args.no_gradient_checkpointing:
        overrides["gradient_checkpointing"] = False
    if args.use_cpu:
        overrides["use_cpu"] = True
    output_dir = args.output_dir or str(Path(args.result).with_suffix("")) + "-trl"
    config = SFTConfig(
        output_dir=output_dir,
        max_length=args.max_length,
        packing=args.packing,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **overrides,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    peft_config = None
    if args.method == "lora":
        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    dataset = datasets.load_dataset("json", data_files=args.data, split="train")
    trainer = CountingTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[FirstStep()],
    )
    train_start = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - train_start
    trainer.save_model(output_dir)
    result = {
        "process_started_at": started,
        "first_step_at": first_step[0] if first_step else None,
        "train_seconds": train_seconds,
        "trained_tokens": trained[0],
        "steps": int(trainer.state.global_step),
        "train_rows": len(dataset),  # samples (prompt/completion rows) given to TRL
        "packed_rows": len(trainer.train_dataset),  # rows after TRL's packing (= samples without it)
        "train_loss": float(output.training_loss),
        "bf16": bool(config.bf16),
        "gradient_checkpointing": bool(config.gradient_checkpointing),
        "optim": str(config.optim),
        "padding_free": bool(getattr(trainer, "padding_free", False)),
        "attn_implementation": str(model.config._attn_implementation),
    }
    Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
