"""Does a packed batch keep its samples apart? The second sample's logits, packed behind the
first, against the same sample run alone, with the attention implementation a CPU gets (sdpa)."""

from __future__ import annotations

from pathlib import Path


def isolation_report(model_dir: Path, rows: list[dict], max_length: int) -> list[str]:
    """One line per packing (TRL's padding-free collator, our PackedCollator), with the largest
    absolute logit difference; near 0 means isolated."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from plugins.data.collator import PackedCollator

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    first, second = (
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)[
            : max_length // 2
        ]
        for r in rows
    )
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second])).logits[0]
        trl_batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(
            [{"input_ids": first}, {"input_ids": second}]
        )
        trl_inputs = {k: v for k, v in trl_batch.items() if k != "labels"}
        trl_logits = model(**trl_inputs).logits[0, len(first) : len(first) + len(second)]
        row = {
            "input_ids": first + second,
            "labels": first + second,
            "position_ids": list(range(len(first))) + list(range(len(second))),
            "seq_lengths": [len(first), len(second)],
        }
        ours_batch = PackedCollator(pad_token_id=tokenizer.pad_token_id)([row])
        ours_inputs = {k: v for k, v in ours_batch.items() if k != "labels"}
        ours_logits = model(**ours_inputs).logits[0, len(first) : len(first) + len(second)]
    trl_diff = float((trl_logits - alone).abs().max())
    ours_diff = float((ours_logits - alone).abs().max())
    attention = model.config._attn_implementation
    return [
        f"attention implementation on this machine: `{attention}`; two samples of {len(first)} and "
        f"{len(second)} tokens packed into one row, the second sample's logits vs the sample alone:",
        f"TRL 1.16 padding-free collator (packing=True: one flattened row, position_ids restart, "
        f"cu_seq_lens passed): max |diff| = {trl_diff:.2e} -> "
        + ("isolated" if trl_diff < 1e-3 else "**samples attend to each other**")
        + " (without flash attention, the varlen boundaries are ignored and the row gets one causal mask; "
        "attention cost grows with the square of the whole batch's length)",
        f"ours (PackedCollator, 4-D boolean block-diagonal causal mask + restarting position_ids): "
        f"max |diff| = {ours_diff:.2e} -> " + ("isolated" if ours_diff < 1e-3 else "**NOT isolated**"),
    ]
