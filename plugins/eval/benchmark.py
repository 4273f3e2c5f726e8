"""Load a model artefact, answer prompts greedily, measure load time, tokens/s and peak memory.

Optionally the same loaded model also answers chat prompts (the behavioural checks), outside the
timing: a GGUF through the chat template stored in the file, other artefacts from the prompt text
rendered with the training template.

Used by the inference test (OUTPUT) and its ``benchmark`` tool (``scripts/benchmark.py``). Peak memory is the GPU's peak
allocation on CUDA, else the process's peak resident memory above its level before loading
(sampled every few milliseconds), so it includes the weights.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plugins.eval.prompts import ChatPrompt

ARTEFACT_KINDS = ("adapter", "hf", "gguf")


@dataclass
class BenchmarkResult:
    name: str
    kind: str  # adapter | hf | gguf
    path: str
    device: str
    load_seconds: float
    new_tokens: int
    generate_seconds: float
    tokens_per_second: float
    peak_memory_bytes: int
    memory_kind: str  # cuda_allocated | rss_increase
    sample: str
    chat_answers: list[str] = field(default_factory=list)
    chat_template: str | None = None  # where the chat answers' prompt format came from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def artefact_kind(path: str | Path) -> str:
    """What a path holds: a GGUF file, a PEFT adapter folder, or a transformers model folder."""
    path = Path(path)
    if path.suffix == ".gguf":
        return "gguf"
    if (path / "adapter_config.json").is_file():
        return "adapter"
    return "hf"


class PeakMemory:
    """Peak memory while the block runs: CUDA peak allocation, or sampled RSS above the start."""

    def __init__(self, interval_s: float = 0.005):
        import torch

        self.interval_s = interval_s
        self.on_cuda = torch.cuda.is_available()
        self.peak = 0
        self._stop = threading.Event()

    @property
    def kind(self) -> str:
        return "cuda_allocated" if self.on_cuda else "rss_increase"

    @contextmanager
    def measure(self):
        import psutil
        import torch

        gc.collect()
        if self.on_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            yield self
            self.peak = int(torch.cuda.max_memory_allocated())
            return
        process = psutil.Process()
        baseline = process.memory_info().rss
        highest = [baseline]

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                highest[0] = max(highest[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join()
            highest[0] = max(highest[0], process.memory_info().rss)
            self.peak = highest[0] - baseline


def benchmark(
    name: str,
    path: str | Path,
    prompts: list[str],
    *,
    max_new_tokens: int = 32,
    base_model: str | None = None,
    permissions: dict[str, bool] | None = None,
    chat_prompts: Sequence[ChatPrompt] = (),
    chat_max_new_tokens: int = 64,
) -> BenchmarkResult:
    """Load ``path`` (adapter folder, model folder or .gguf), answer every prompt, measure; then
    answer ``chat_prompts`` greedily (not timed).

    ``permissions``: the loading options the user gave for their model (``user_model_options``).
    """
    kind = artefact_kind(path)
    meter = PeakMemory()
    with meter.measure():
        started = time.perf_counter()
        runner = _GGUFRunner(path) if kind == "gguf" else _HFRunner(path, base_model, permissions)
        load_seconds = time.perf_counter() - started
        runner.answer(prompts[0], min(4, max_new_tokens))  # warm-up: first-call overheads are not throughput
        tokens, seconds, first = 0, 0.0, ""
        for i, prompt in enumerate(prompts):
            text, count, elapsed = runner.answer(prompt, max_new_tokens)
            tokens, seconds = tokens + count, seconds + elapsed
            first = text if i == 0 else first
        chat_answers = runner.answer_chats(list(chat_prompts), chat_max_new_tokens) if chat_prompts else []
        runner.close()
    return BenchmarkResult(
        name=name,
        kind=kind,
        path=str(path),
        device=runner.device,
        load_seconds=round(load_seconds, 3),
        new_tokens=tokens,
        generate_seconds=round(seconds, 3),
        tokens_per_second=round(tokens / seconds, 2) if seconds else 0.0,
        peak_memory_bytes=meter.peak,
        memory_kind=meter.kind,
        sample=first,
        chat_answers=chat_answers,
        chat_template=runner.chat_template if chat_prompts else None,
    )


def benchmark_artefacts(
    paths: Sequence[str], messages: Sequence[str], *, max_new_tokens: int = 32, base_model: str | None = None
) -> dict[str, Any]:
    """Measure each artefact on ``messages`` as chat prompts; the base model first when given."""
    targets = ([("base", base_model)] if base_model else []) + [(Path(p).name, str(p)) for p in paths]
    prompts = user_prompts([path for _, path in targets], messages)
    rows = [
        benchmark(name, path, prompts, max_new_tokens=max_new_tokens, base_model=base_model).to_dict()
        for name, path in targets
    ]
    return {"prompts": prompts, "models": rows}


def user_prompts(paths: Sequence[str], messages: Sequence[str]) -> list[str]:
    """``messages`` as chat prompts, in the template of the first model folder (else the first GGUF's)."""
    from plugins.eval.loading import load_saved_tokenizer
    from plugins.eval.prompts import render_chat_prompt

    conversations = [[{"role": "user", "content": m}] for m in messages]
    for path in paths:
        if artefact_kind(path) != "gguf":
            tokenizer = load_saved_tokenizer(path)
            return [render_chat_prompt(c, tokenizer, None).text for c in conversations]
    from transformers.utils.chat_template_utils import render_jinja_template

    from plugins.models.gguf_source import gguf_fields

    template = gguf_fields(paths[0], "tokenizer.chat_template")["tokenizer.chat_template"]
    if not template:
        return list(messages)
    rendered, _generation_spans = render_jinja_template(
        conversations=conversations, chat_template=template, add_generation_prompt=True
    )
    return rendered


class _HFRunner:
    chat_template = "training"

    def __init__(self, path: str | Path, base_model: str | None, permissions: dict[str, bool] | None):
        import torch

        from plugins.eval.generation import stop_token_ids
        from plugins.eval.loading import load_saved_tokenizer, load_trained_model

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = load_saved_tokenizer(path)
        self.model = load_trained_model(
            path, base_model=base_model, dtype=dtype, device=self.device, permissions=permissions
        )
        self.stops = stop_token_ids(self.tokenizer, None)

    def answer(self, prompt: str, max_new_tokens: int) -> tuple[str, int, float]:
        from plugins.eval.generation import generate

        settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "seed": 0}
        result = generate(self.model, self.tokenizer, prompt, settings, self.stops)
        return result.text, result.new_tokens, result.seconds

    def answer_chats(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        from plugins.eval.generation import generate_many

        settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "seed": 0}
        answers = generate_many(self.model, self.tokenizer, [p.text for p in prompts], settings, self.stops)
        return [answer.text for answer in answers]

    def close(self) -> None:
        self.model = None
        gc.collect()


class _GGUFRunner:
    device = "cpu (llama.cpp)"

    def __init__(self, path: str | Path):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, verbose=False)  # n_ctx 0: the model's own
        # llama-cpp-python registers the file's template under this name; selecting it by name keeps
        # it from swapping in a built-in format it guesses to be equivalent.
        self.own_template = "tokenizer.chat_template" in self.llm.metadata
        self.chat_template = "gguf metadata" if self.own_template else "training (the GGUF has no chat template)"
        if self.own_template:
            self.llm.chat_format = "chat_template.default"

    def answer(self, prompt: str, max_new_tokens: int) -> tuple[str, int, float]:
        started = time.perf_counter()
        output = self.llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        elapsed = time.perf_counter() - started
        return output["choices"][0]["text"].strip(), int(output["usage"]["completion_tokens"]), elapsed

    def answer_chats(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        return [self._answer_chat(prompt, max_new_tokens) for prompt in prompts]

    def _answer_chat(self, prompt: ChatPrompt, max_new_tokens: int) -> str:
        if not self.own_template:
            return self.answer(prompt.text, max_new_tokens)[0]
        output = self.llm.create_chat_completion(prompt.messages, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        return (output["choices"][0]["message"]["content"] or "").strip()

    def close(self) -> None:
        self.llm.close()
