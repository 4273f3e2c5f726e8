"""TRL's DPOTrainer on a conversational prompt/chosen/rejected JSON Lines file, LoRA r16/alpha 32/
dropout 0 on all linear layers, configured as a careful user would on a CPU: the reference is the
model with the adapter disabled (DPOTrainer's default with PEFT), the same precision and gradient
checkpointing as the job they are compared with (DPOConfig defaults both on; ``use_cpu=True`` is what
TrainingArguments asks for bf16 on a CPU). Run by benchmarks/preference.py in a fresh process:

    python benchmarks/trl_dpo_job.py --model DIR --data pairs.jsonl --result out.json
        [--batch-size 2] [--max-length 512] [--max-steps 20] [--learning-rate 5e-5] [--bf16]
        [--gradient-checkpointing]

Writes the per-step losses, the trained tokens (completion tokens of every sequence, chosen and
rejected), the padded tokens and the training seconds to ``--result``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (from_pretrained)")
    parser.add_argument("--data", required=True, help="prompt/chosen/rejected JSON Lines (conversational)")
    parser.add_argument("--result", required=True, help="where to write the measurements (JSON)")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=512, help="DPOConfig.max_length (keep_start)")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True (else fp32)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="DPOConfig's default; off unless set")
    return parser.parse_args()


def main() -> None:
    started = time.time()
    args = parse_args()
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    counted = {"trained": 0, "padded": 0, "attended": 0}
    per_step: list[int] = []  # trained tokens of each micro-batch: shows which pairs each step drew

    class CountingTrainer(DPOTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            per_step.append(int(inputs["completion_mask"].sum()))
            counted["trained"] += per_step[-1]
            counted["attended"] += int(inputs["attention_mask"].sum())
            counted["padded"] += int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, num_items_in_batch)

    output_dir = str(Path(args.result).with_suffix("")) + "-trl"
    config = DPOConfig(
        output_dir=output_dir,
        max_length=args.max_length,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",  # ours' default schedule
        beta=args.beta,
        bf16=args.bf16,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        data_seed=0,  # ours sets both: the same shuffled order of pairs on both sides
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = datasets.load_dataset("json", data_files=args.data, split="train")
    trainer = CountingTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    train_start = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - train_start
    trainer.save_model(output_dir)
    losses = [record["loss"] for record in trainer.state.log_history if "loss" in record]
    result = {
        "process_started_at": started,
        "train_seconds": train_seconds,
        "steps": int(trainer.state.global_step),
        "losses": losses,
        "average_train_loss": float(output.training_loss),
        "trained_tokens": counted["trained"],
        "trained_tokens_per_step": per_step,
        "attended_tokens": counted["attended"],
        "padded_tokens": counted["padded"],
        "train_rows": len(trainer.train_dataset),
        "bf16": bool(config.bf16),
        "gradient_checkpointing": bool(config.gradient_checkpointing),
        "optim": str(config.optim),
        "dataloader_num_workers": config.dataloader_num_workers,
    }
    Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
