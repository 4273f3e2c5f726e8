"""Ollama Modelfile: the TEMPLATE must render exactly the prompt the training template renders."""

from __future__ import annotations

import pytest
from helpers.export_fixtures import SPECIAL_TOKENS

from entity_training import ConfigError, PluginError
from plugins.export.chat_template import analyze_chat_template
from plugins.export.gotemplate import go_string, ollama_template, render_go_template
from plugins.export.modelfile import build_modelfile, check_template_matches, ollama_messages, sampling_parameters
from plugins.models.chat_template import CHATML_TEMPLATE

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Hi, how are you?"},
        {"role": "assistant", "content": "Bien, merci !"},
        {"role": "user", "content": 'Say "{{ quoted }}" and a backslash \\ please.\nTwo lines.'},
    ],
    [
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": '{"temp": 21}'},
    ],
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<s>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:] + ["<|eot|>"]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _jinja(tokenizer, template, messages, generation):
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation
    )


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_ollama_template_renders_the_training_prompt(tokenizer, messages):
    turn_format = analyze_chat_template(tokenizer, CHATML_TEMPLATE)
    template = ollama_template(turn_format)
    generation = messages[-1]["role"] != "assistant"

    ollama_prompt = render_go_template(template, ollama_messages(messages))

    assert ollama_prompt == _jinja(tokenizer, CHATML_TEMPLATE, messages, generation)


def test_template_with_bos_and_default_system_prompt(tokenizer):
    template = (
        "{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|sys|>Default.<|eot|>{% endif %}"
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|eot|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    turn_format = analyze_chat_template(tokenizer, template)
    go = ollama_template(turn_format)
    for messages in CONVERSATIONS[:2]:
        assert render_go_template(go, ollama_messages(messages)) == _jinja(tokenizer, template, messages, True)
    assert turn_format.end_of_turn_tokens == ["<|eot|>", "<|im_end|>"]  # the turn closer, then EOS


def test_position_dependent_template_is_refused(tokenizer):
    template = "{% for m in messages %}{% if loop.last %}LAST:{% endif %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ConfigError, match="Remove 'ollama' from export_formats"):
        analyze_chat_template(tokenizer, template)


def test_modelfile_contents(tokenizer):
    turn_format = analyze_chat_template(tokenizer, CHATML_TEMPLATE)
    text = build_modelfile(
        "model-q8_0.gguf",
        turn_format,
        num_ctx=512,
        system_prompt="You are terse.",
        sampling=sampling_parameters({"do_sample": True, "temperature": 0.7, "top_p": 0.9}),
    )
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-q8_0.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert "PARAMETER num_ctx 512" in lines
    assert "PARAMETER temperature 0.7" in lines and "PARAMETER top_p 0.9" in lines
    assert 'SYSTEM """You are terse."""' in lines
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert template == ollama_template(turn_format)


def test_greedy_evaluation_becomes_temperature_zero():
    assert sampling_parameters({"do_sample": False, "temperature": 0.7}) == {"temperature": 0}
    assert sampling_parameters(None) == {}


def test_a_wrong_template_is_caught_before_writing(tokenizer):
    turn_format = analyze_chat_template(tokenizer, CHATML_TEMPLATE)
    broken = ollama_template(turn_format).replace('"<|im_end|>\\n"', '"<|im_end|>"', 1)
    with pytest.raises(PluginError, match="training used"):
        check_template_matches(broken, turn_format)


def test_go_renderer_trim_markers_and_literals():
    template = 'a  {{- "x\\n" -}}  b{{ if eq .N 2 }}two{{ else }}other{{ end }}{{ len .L }}'
    assert render_go_template(template, {"N": 2, "L": [1, 2, 3]}) == "ax\nbtwo3"
    assert go_string('say "hi"\\') == '"say \\"hi\\"\\\\"'
