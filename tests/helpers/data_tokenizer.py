"""A small byte-level BPE tokenizer with ChatML special tokens, built locally for the data tests."""

from __future__ import annotations

from functools import cache

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The waves roll in and out.",
    "def add(a, b):\n    return a + b\n",
    "You are a helpful assistant. Answer the question briefly and clearly.",
    'system user assistant tool Instruction Response: ### <tool_call> </tool_call> {"name": "arguments"}',
]


@cache
def _backend_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return tokenizer.to_str()


def build_tokenizer(chat_template: str | None = None):
    """A fresh PreTrainedTokenizerFast (pad <pad>, bos <s>, eos </s>) with ``chat_template`` (ChatML by default)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from plugins.data.templates import CHATML

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend_json()),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHATML if chat_template is None else chat_template,
    )


CHAR_SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def build_char_tokenizer(chat_template: str | None = None):
    """One token per character (plus the special tokens), so label positions can be checked by hand."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from plugins.data.templates import CHATML

    characters = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(CHAR_SPECIAL_TOKENS + characters)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(CHAR_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHATML if chat_template is None else chat_template,
    )
