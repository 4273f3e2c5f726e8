"""The built-in models ``tiny`` and ``small``: Llama architecture, built locally from a seed.

Nothing is downloaded. On first use the shared tokenizer is trained and the model is initialised
and briefly pretrained on the standard library's prose (see ``corpus.py``), then saved as a
normal Hugging Face folder under ``cache_root()/models/<name>-<version>``. Later uses load it.
Bump a recipe's version whenever anything that changes its weights changes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from plugins.models.cache import build_once
from plugins.models.chat_template import END_OF_TEXT, IM_END, PAD, SPECIAL_TOKENS
from plugins.models.pretrain import PretrainSchedule, ProgressCallback
from plugins.models.tokenizer_builder import VOCAB_SIZE
from plugins.utils import cache_root

TOKENIZER_VERSION = "v1"
BUILD_INFO = "build_info.json"
HELD_OUT_EVERY = 50  # every 50th document is kept out of pretraining to measure it


@dataclass(frozen=True)
class BuiltinRecipe:
    name: str
    version: str
    description: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    tie_embeddings: bool
    pretraining: PretrainSchedule
    pretraining_documents: int | None = None  # the first N corpus documents; None: all of them
    seed: int = 0
    max_position_embeddings: int = 2048

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}"


BUILTIN_RECIPES: dict[str, BuiltinRecipe] = {
    "tiny": BuiltinRecipe(
        name="tiny",
        version="v2",
        description="2M-parameter Llama for tests; builds in seconds, barely pretrained.",
        hidden_size=128,
        num_layers=4,
        intermediate_size=512,
        num_heads=4,
        num_kv_heads=2,
        tie_embeddings=True,
        pretraining=PretrainSchedule(steps=12, batch_size=4, seq_len=64, learning_rate=3e-3, warmup_steps=3),
        pretraining_documents=400,
    ),
    # Shallow and wide: in a pretraining budget of ~130k tokens a 4-layer model learns faster than
    # an 8-layer one of the same size, and the wider hidden state gives the frozen output layer more
    # directions for a LoRA fine-tune to use. Untied embeddings: the input table costs no compute.
    "small": BuiltinRecipe(
        name="small",
        version="v2",
        description="11M-parameter Llama base model for demos and benchmarks; pretrained for ~2 minutes on first use.",
        hidden_size=320,
        num_layers=4,
        intermediate_size=1024,
        num_heads=5,
        num_kv_heads=5,
        tie_embeddings=False,
        pretraining=PretrainSchedule(steps=250, batch_size=8, seq_len=64, learning_rate=3e-3, warmup_steps=10),
    ),
}


def builtin_names() -> list[str]:
    return sorted(BUILTIN_RECIPES)


def builtin_folder(name: str) -> Path:
    return cache_root() / "models" / BUILTIN_RECIPES[name].folder_name


def is_built(name: str) -> bool:
    return builtin_folder(name).is_dir()


def ensure_builtin(name: str, *, progress: ProgressCallback | None = None) -> Path:
    """The folder of built-in model ``name``, building it on first use (atomically, once)."""
    recipe = BUILTIN_RECIPES[name]
    folder, _ = build_once(builtin_folder(name), lambda staging: build_builtin(recipe, staging, progress=progress))
    return folder


def ensure_tokenizer() -> Path:
    """The shared tokenizer folder, trained on first use."""
    folder, _ = build_once(cache_root() / "models" / f"tokenizer-{TOKENIZER_VERSION}", _build_tokenizer)
    return folder


def _build_tokenizer(folder: Path) -> None:
    from plugins.models.corpus import pretraining_documents
    from plugins.models.tokenizer_builder import train_tokenizer

    train_tokenizer(pretraining_documents()).save_pretrained(folder)


def _token_id(token: str) -> int:
    # The tokenizer trainer puts the special tokens first, in their order (tokenizer_builder.py).
    return SPECIAL_TOKENS.index(token)


def llama_config(recipe: BuiltinRecipe):
    """The model's config, known from the recipe without building anything."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_layers,
        intermediate_size=recipe.intermediate_size,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=recipe.tie_embeddings,
        bos_token_id=_token_id(END_OF_TEXT),
        eos_token_id=_token_id(IM_END),
        pad_token_id=_token_id(PAD),
        rms_norm_eps=1e-5,
        dtype="float32",
    )


def build_builtin(recipe: BuiltinRecipe, folder: Path, *, progress: ProgressCallback | None = None) -> None:
    """Build ``recipe`` into ``folder``: same recipe and machine -> identical files."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    from plugins.models.corpus import corpus_fingerprint, pretraining_documents
    from plugins.models.pretrain import held_out_loss, pretrain, token_stream

    started = time.perf_counter()
    tokenizer_folder = ensure_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    if len(tokenizer) != VOCAB_SIZE or any(tokenizer.convert_tokens_to_ids(t) != _token_id(t) for t in SPECIAL_TOKENS):
        raise RuntimeError(f"the tokenizer in {tokenizer_folder} does not match llama_config; delete it to rebuild")
    config = llama_config(recipe)
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(config)

    documents = pretraining_documents()[: recipe.pretraining_documents]
    separator = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    train_stream = token_stream(tokenizer, [d for i, d in enumerate(documents) if i % HELD_OUT_EVERY], separator)
    held_out = token_stream(tokenizer, documents[::HELD_OUT_EVERY], separator)
    seq_len = recipe.pretraining.seq_len
    loss_before = held_out_loss(model, held_out, seq_len)
    losses = pretrain(model, train_stream, recipe.pretraining, seed=recipe.seed, progress=progress or _printer(recipe))
    loss_after = held_out_loss(model, held_out, seq_len)

    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, config.bos_token_id],
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    for item in tokenizer_folder.iterdir():
        shutil.copy2(item, folder / item.name)
    info = {
        "name": recipe.name,
        "version": recipe.version,
        "recipe": asdict(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_fingerprint": corpus_fingerprint(documents),
        "corpus_tokens": len(train_stream) + len(held_out),
        "pretraining_tokens": recipe.pretraining.steps * recipe.pretraining.batch_size * seq_len,
        "final_train_loss": losses[-1],
        "held_out_loss_before": loss_before,
        "held_out_loss_after": loss_after,
        "build_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _printer(recipe: BuiltinRecipe) -> Callable[[int, int, float], None]:
    """Default progress: a line every tenth of the run, on stderr (first use of ``small`` takes minutes)."""
    every = max(1, recipe.pretraining.steps // 10)

    def report(step: int, total: int, loss: float) -> None:
        if step == 1:
            print(
                f"Building built-in model {recipe.name!r} (first use only): pretraining {total} steps", file=sys.stderr
            )
        if step % every == 0 or step == total:
            print(f"  {recipe.name}: step {step}/{total}  loss {loss:.3f}", file=sys.stderr, flush=True)

    return report
