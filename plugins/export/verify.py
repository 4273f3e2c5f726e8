"""Check an exported artefact against the trained model: next-token logits and greedy tokens.

The reference is the trained model in float32: for each prompt, its greedy continuation and the
logits along prompt + continuation. Top-1 agreement is measured on the continuation positions
(where a trained model is confident); the maximum logit difference over every position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Minimum top-1 agreement on the trained model's own greedy path, per GGUF type. Types absent
# here (q4_0, K-quants) are measured and reported but not gated.
REQUIRED_TOP1_AGREEMENT = {"f32": 1.0, "f16": 1.0, "bf16": 0.95, "q8_0": 0.95}
# A position whose top-2 reference logits are closer than the type's rounding error is a near-tie:
# either answer is faithful, so the gate counts agreement on the other (decisive) positions.
NEAR_TIE_MARGIN = {"f32": 1e-3, "f16": 2e-2, "bf16": 1e-1, "q8_0": 2e-1}
# Greedy tokens per prompt whose predictions are compared: with the default 4 prompts up to 128
# positions, enough to see a few percent of disagreement (fewer where answers end sooner).
VERIFY_NEW_TOKENS = 32


@dataclass
class Reference:
    prompt_ids: list[list[int]]
    continuation_ids: list[list[int]]
    logits: list[np.ndarray]  # [prompt + continuation - 1 positions, vocab] per prompt


@dataclass
class Comparison:
    top1_agreement: float  # on the reference's greedy continuation positions
    max_abs_logit_diff: float  # over all positions
    greedy_match: float  # fraction of prompts whose greedy continuation is identical
    prompts: int
    positions: int = 0  # continuation positions compared (what top1_agreement counts)
    required_top1: float | None = None
    passed: bool = True
    tokenization_match: bool = True
    decisive_top1_agreement: float | None = None  # excluding near-ties; what the gate uses
    margins: list[float] = field(default_factory=list, repr=False)  # reference top-1 margin per position
    agreements: list[bool] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("margins", "agreements")}
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in data.items()}


def build_reference(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = VERIFY_NEW_TOKENS
) -> Reference:
    """Greedy continuation and teacher-forced logits of ``model`` for each chat-formatted prompt."""
    import torch

    model.eval()
    prompt_ids, continuations, logits = [], [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            out = model.generate(
                torch.tensor([ids], device=model.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )[0].tolist()
            continuation = out[len(ids) :]
            full = torch.tensor([ids + continuation], device=model.device)
            prompt_ids.append(ids)
            continuations.append(continuation)
            logits.append(model(full).logits[0].float().cpu().numpy()[:-1])
    return Reference(prompt_ids, continuations, logits)


def compare_hf_model(model: Any, reference: Reference) -> Comparison:
    """Teacher-forced comparison of another transformers/PEFT model with the reference."""
    import torch

    model.eval()
    candidate = []
    with torch.no_grad():
        for ids, continuation in zip(reference.prompt_ids, reference.continuation_ids, strict=True):
            full = torch.tensor([ids + continuation], device=model.device)
            candidate.append(model(full).logits[0].float().cpu().numpy()[:-1])
    return _compare(reference, candidate, greedy=None)


def compare_gguf(gguf_path: Path, tokenizer: Any, prompts: list[str], reference: Reference) -> Comparison:
    """Run the GGUF in llama.cpp (llama-cpp-python) with an f32 KV cache and compare."""
    import llama_cpp

    longest = max(len(p) + len(c) for p, c in zip(reference.prompt_ids, reference.continuation_ids, strict=True))
    llm = llama_cpp.Llama(
        model_path=str(gguf_path),
        n_ctx=max(64, longest + 8),
        logits_all=True,
        verbose=False,
        type_k=0,  # f32 KV cache: the default f16 cache alone moves logits by ~5e-3
        type_v=0,
    )
    try:
        tokenization_match = all(
            llm.tokenize(
                prompt.encode("utf-8"), add_bos=llm.metadata.get("tokenizer.ggml.add_bos_token") == "true", special=True
            )
            == ids
            for prompt, ids in zip(prompts, reference.prompt_ids, strict=True)
        )
        candidate, greedy = [], []
        for ids, continuation in zip(reference.prompt_ids, reference.continuation_ids, strict=True):
            llm.reset()
            llm.eval(ids + continuation)
            candidate.append(np.array(llm.scores[: len(ids) + len(continuation) - 1], dtype=np.float32))
            greedy.append(_llama_greedy(llm, ids, len(continuation)))
    finally:
        llm.close()
    comparison = _compare(reference, candidate, greedy=greedy)
    comparison.tokenization_match = tokenization_match
    return comparison


def _llama_greedy(llm: Any, ids: list[int], count: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    tokens: list[int] = []
    for _ in range(count):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        llm.eval([token])
    return tokens


def _compare(reference: Reference, candidate: list[np.ndarray], greedy: list[list[int]] | None) -> Comparison:
    margins: list[float] = []
    agreements: list[bool] = []
    max_diff = 0.0
    for ids, ref, cand in zip(reference.prompt_ids, reference.logits, candidate, strict=True):
        vocab = min(ref.shape[1], cand.shape[1])
        ref, cand = ref[:, :vocab], cand[:, :vocab]
        max_diff = max(max_diff, float(np.abs(ref - cand).max()))
        on_path = ref[len(ids) - 1 :], cand[len(ids) - 1 :]  # positions that predict the continuation
        agreements += (on_path[0].argmax(-1) == on_path[1].argmax(-1)).tolist()
        top2 = np.sort(on_path[0], axis=-1)[:, -2:]
        margins += (top2[:, 1] - top2[:, 0]).tolist()
    agree, total = sum(agreements), len(agreements)
    if greedy is None:
        greedy_match = 1.0 if agree == total else 0.0
    else:
        same = sum(g == c for g, c in zip(greedy, reference.continuation_ids, strict=True))
        greedy_match = same / max(1, len(greedy))
    return Comparison(
        top1_agreement=agree / max(1, total),
        max_abs_logit_diff=max_diff,
        greedy_match=greedy_match,
        prompts=len(reference.prompt_ids),
        positions=total,
        margins=margins,
        agreements=agreements,
    )


def gate(comparison: Comparison, quantization: str) -> Comparison:
    """Mark the comparison passed/failed against the required agreement for this GGUF type."""
    required = REQUIRED_TOP1_AGREEMENT.get(quantization)
    margin = NEAR_TIE_MARGIN.get(quantization, 0.0)
    decisive = [agree for agree, m in zip(comparison.agreements, comparison.margins, strict=True) if m > margin]
    comparison.decisive_top1_agreement = sum(decisive) / len(decisive) if decisive else 1.0
    comparison.required_top1 = required
    comparison.passed = comparison.tokenization_match and (
        required is None or comparison.decisive_top1_agreement >= required
    )
    return comparison


def read_gguf_summary(path: Path) -> dict[str, Any]:
    """Read a GGUF back with gguf.GGUFReader: architecture, tensor count/shapes, key tokenizer metadata."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str) -> Any:
        found = reader.get_field(name)
        if found is None:
            return None
        value = found.contents()
        return value

    arch = field("general.architecture")
    return {
        "architecture": arch,
        "tensor_count": len(reader.tensors),
        "tensor_shapes": {t.name: [int(d) for d in t.shape] for t in reader.tensors},
        "tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
        "vocab_size": len(field("tokenizer.ggml.tokens") or []),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "add_bos_token": field("tokenizer.ggml.add_bos_token"),
        "chat_template": field("tokenizer.chat_template"),
        "context_length": field(f"{arch}.context_length"),
        "block_count": field(f"{arch}.block_count"),
    }
