"""Label masking from the template itself: exact positions, checked by hand, for each built-in template.

A character-level tokenizer (one token per character, special tokens whole) makes the positions
countable: the comments under each case spell out the rendered tokens.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers.data_tokenizer import build_char_tokenizer, build_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from entity_training import ConfigError, InputError
from plugins.data.dataset import load_conversations
from plugins.data.encoding import IGNORE_INDEX, encode_conversations
from plugins.data.templates import ALPACA, CHATML, LLAMA3, TemplateRenderer, resolve_chat_template


@cache
def shared_bpe_tokenizer():
    return build_tokenizer()


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Ok"},
    {"role": "user", "content": "Why"},
    {"role": "assistant", "content": "So"},
]


def trained_positions(template: str, messages: list[dict], train_on: str = "assistant", **conversation) -> list[int]:
    tokenizer = build_char_tokenizer(template)
    encoded = encode_conversations(
        [{"messages": messages, **conversation}],
        tokenizer,
        TemplateRenderer(template, tokenizer),
        train_on=train_on,
        max_seq_length=4096,
        truncation="right",
    )
    labels = encoded.labels[0]
    positions = np.flatnonzero(labels != IGNORE_INDEX).tolist()
    assert (labels[positions] == encoded.input_ids[0][positions]).all()  # trained labels are the tokens themselves
    return positions


def trained_text(template: str, messages: list[dict], **conversation) -> str:
    tokenizer = build_char_tokenizer(template)
    encoded = encode_conversations(
        [{"messages": messages, **conversation}],
        tokenizer,
        TemplateRenderer(template, tokenizer),
        train_on="assistant",
        max_seq_length=4096,
        truncation="right",
    )
    labels = encoded.labels[0]
    return tokenizer.decode(labels[labels != IGNORE_INDEX].tolist())


def test_chatml_every_assistant_turn_and_its_end_token():
    # <|im_start|>0 user1-4 \n5 Hi6,7 <|im_end|>8 \n9 <|im_start|>10 assistant11-19 \n20 Ok21,22 <|im_end|>23 \n24
    # <|im_start|>25 user26-29 \n30 Why31-33 <|im_end|>34 \n35 <|im_start|>36 assistant37-45 \n46 So47,48 <|im_end|>49 \n50
    assert trained_positions(CHATML, TWO_TURNS) == [21, 22, 23, 47, 48, 49]
    assert trained_positions(CHATML, TWO_TURNS, "last_assistant") == [47, 48, 49]
    assert trained_positions(CHATML, TWO_TURNS, "all") == list(range(1, 51))  # position 0 is never a target


def test_llama3_reply_and_eot():
    # <s>0 <|start_header_id|>1 user2-5 <|end_header_id|>6 \n\n7,8 Hi9,10 <|eot_id|>11
    # <|start_header_id|>12 assistant13-21 <|end_header_id|>22 \n\n23,24 Ok25,26 <|eot_id|>27
    assert trained_positions(LLAMA3, TWO_TURNS[:2]) == [25, 26, 27]


def test_alpaca_reply_and_eos_but_not_the_blank_line_after():
    # "Be brief.\n\n"0-10 "### Instruction:\n"11-27 Hi28,29 "\n\n"30,31 "### Response:\n"32-45 Ok46,47 </s>48 "\n\n"49,50
    messages = [{"role": "system", "content": "Be brief."}, *TWO_TURNS[:2]]
    assert trained_positions(ALPACA, messages) == [46, 47, 48]


@pytest.mark.parametrize(("template", "end"), [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>"), (ALPACA, "</s>")])
def test_tool_calls_are_trained_and_tool_results_are_not(template, end):
    messages = [
        {"role": "user", "content": "Go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
        },
        {"role": "tool", "content": "RESULT"},
        {"role": "assistant", "content": "Done"},
    ]
    text = trained_text(template, messages, tools=[{"name": "f"}])
    assert text == f'<tool_call>\n{{"name": "f", "arguments": {{"x": 1}}}}\n</tool_call>{end}Done{end}'


def test_documents_train_every_token_without_a_template():
    positions = trained_positions(CHATML, [{"role": "assistant", "content": "abc"}], document=True)
    assert positions == [1, 2, 3, 4]  # <s> a b c </s>: everything after the first token


def test_truncation_right_drop_and_untrained_samples():
    tokenizer = build_char_tokenizer()
    renderer = TemplateRenderer(CHATML, tokenizer)
    long_reply = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x" * 40}]
    long_prompt = [{"role": "user", "content": "y" * 40}, {"role": "assistant", "content": "Ok"}]
    conversations = [{"messages": long_reply}, {"messages": long_prompt}]
    right = encode_conversations(
        conversations, tokenizer, renderer, train_on="assistant", max_seq_length=30, truncation="right"
    )
    assert (right.truncated, right.dropped_untrained, len(right.input_ids)) == (2, 1, 1)
    assert len(right.input_ids[0]) == 30
    drop = encode_conversations(
        conversations, tokenizer, renderer, train_on="assistant", max_seq_length=30, truncation="drop"
    )
    assert (drop.dropped_too_long, len(drop.input_ids)) == (2, 0)


def test_bpe_tokenizer_trains_exactly_the_reply_tokens():
    tokenizer = build_tokenizer()
    encoded = encode_conversations(
        [{"messages": TWO_TURNS}],
        tokenizer,
        TemplateRenderer(CHATML, tokenizer),
        train_on="assistant",
        max_seq_length=512,
        truncation="right",
    )
    labels = encoded.labels[0]
    assert tokenizer.decode(labels[labels != IGNORE_INDEX].tolist()) == "Ok<|im_end|>So<|im_end|>"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (third-party datasets)")
def test_glaive_tool_results_are_never_trained():
    conversations = load_conversations([SHARED / "glaive_toolcall_en_demo.json"]).conversations[:40]
    tokenizer = build_tokenizer()
    encoded = encode_conversations(
        conversations,
        tokenizer,
        TemplateRenderer(CHATML, tokenizer),
        train_on="assistant",
        max_seq_length=100_000,
        truncation="right",
    )
    assert len(encoded.labels) == 40
    for conversation, ids, labels in zip(conversations, encoded.input_ids, encoded.labels, strict=True):
        trained = tokenizer.decode(ids[labels != IGNORE_INDEX].tolist())
        replies = [m for m in conversation["messages"] if m["role"] == "assistant"]
        assert trained.count("<|im_end|>") == len(replies)
        for message in conversation["messages"]:
            if message["role"] in ("user", "tool") and len(message["content"]) > 30:
                assert message["content"] not in trained


def test_template_choice_errors():
    tokenizer = build_tokenizer(chat_template="")
    with pytest.raises(ConfigError, match="has no chat template"):
        resolve_chat_template("tokenizer", tokenizer)
    with pytest.raises(ConfigError, match="unknown chat template 'vicuna'"):
        resolve_chat_template("vicuna", tokenizer)
    with pytest.raises(ConfigError, match="does not compile"):
        resolve_chat_template("{% for m in messages %}", tokenizer)
    assert resolve_chat_template("llama3", tokenizer) == LLAMA3


def test_a_template_that_fails_to_render_names_the_row():
    tokenizer = build_tokenizer()
    strict = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}{{ m.content }}{% endfor %}"
    conversation = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "tool", "content": "b"},
            {"role": "assistant", "content": "c"},
        ],
        "source": {"file": "data.jsonl", "line": 7},
    }
    with pytest.raises(InputError) as caught:
        encode_conversations(
            [conversation],
            tokenizer,
            TemplateRenderer(strict, tokenizer),
            train_on="assistant",
            max_seq_length=64,
            truncation="right",
        )
    assert "data.jsonl:7" in str(caught.value) and "no tool role" in str(caught.value) and caught.value.exit_code == 2


def test_a_template_that_rewrites_history_is_reported():
    tokenizer = build_tokenizer()
    # Drops earlier assistant turns, like reasoning-stripping templates: not prefix-stable.
    rewriting = (
        "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}{{ m.role + ':' + m.content + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    )
    with pytest.raises(InputError, match="not prefix-stable"):
        encode_conversations(
            [{"messages": TWO_TURNS}],
            tokenizer,
            TemplateRenderer(rewriting, tokenizer),
            train_on="assistant",
            max_seq_length=512,
            truncation="right",
        )
    last_only = encode_conversations(
        [{"messages": TWO_TURNS}],
        tokenizer,
        TemplateRenderer(rewriting, tokenizer),
        train_on="last_assistant",
        max_seq_length=512,
        truncation="right",
    )
    labels = last_only.labels[0]
    assert tokenizer.decode(labels[labels != IGNORE_INDEX].tolist()) == "So"


def test_a_template_that_drops_a_reply_is_reported():
    tokenizer = build_tokenizer()
    no_tool_calls = "{% for m in messages %}{% if m.content %}{{ m.role + ': ' + m.content + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '' }}{% endif %}"
    conversation = {
        "messages": [
            {"role": "user", "content": "Go"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}],
            },
            {"role": "tool", "content": "r"},
            {"role": "assistant", "content": "Done"},
        ],
        "source": {"file": "d.jsonl", "index": 4},
    }
    with pytest.raises(InputError, match=r"d.jsonl: row 4: the chat template renders nothing for message 1"):
        encode_conversations(
            [conversation],
            tokenizer,
            TemplateRenderer(no_tool_calls, tokenizer),
            train_on="assistant",
            max_seq_length=512,
            truncation="right",
        )


_WORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="\n\t "), max_size=40
)
_CONTENT = st.builds(lambda first, rest: first + rest, st.sampled_from(list("AbZ9é?(")), _WORDS)


@given(
    turns=st.lists(st.tuples(_CONTENT, _CONTENT), min_size=1, max_size=3),
    system=st.one_of(st.none(), _CONTENT),
    template=st.sampled_from(["chatml", "llama3", "alpaca"]),
)
@settings(max_examples=60, deadline=None)
def test_trained_tokens_are_exactly_the_replies_and_end_tokens(turns, system, template):
    """Property: whatever the text, the trained tokens decode to each reply followed by its end token."""
    tokenizer = shared_bpe_tokenizer()
    source = resolve_chat_template(template, tokenizer)
    messages = [{"role": "system", "content": system}] if system is not None else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    encoded = encode_conversations(
        [{"messages": messages}],
        tokenizer,
        TemplateRenderer(source, tokenizer),
        train_on="assistant",
        max_seq_length=100_000,
        truncation="right",
    )
    ids, labels = encoded.input_ids[0], encoded.labels[0]
    end = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "alpaca": "</s>"}[template]
    assert tokenizer.decode(ids[labels != IGNORE_INDEX].tolist()) == "".join(a + end for _, a in turns)
