"""RunReportPlugin: a self-contained report.html, checked by rendering it in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from helpers.training import resolved_training_config

from entity_training import Stage
from entity_training.memory import Memory
from plugins import memory_keys as keys
from plugins.report.svg_chart import line_chart_svg
from plugins.run_report import RunReportPlugin

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def full_memory() -> Memory:
    memory = Memory()
    memory.set(
        keys.TRAINING_CONFIG,
        resolved_training_config(model_name_or_path="tiny", training_method="lora", learning_rate=2e-4, lora_r=8),
    )
    memory.set(keys.DATASET_STATS, {"rows": 100, "format": "alpaca", "per_file": {"sample.jsonl": 100}})
    memory.set(keys.DATASET_TOKEN_STATS, {"tokens": 12345, "trained_tokens": 6789, "packing_efficiency": 0.93})
    history = [{"step": s, "loss": 3.0 / s + 0.5} for s in range(1, 21)] + [
        {"step": s, "eval_loss": 2.5 / (s / 5) + 0.6} for s in (5, 10, 15, 20)
    ]
    memory.set(
        keys.TRAINING_RESULT,
        {
            "base_model": "tiny",
            "method": "lora",
            "steps": 20,
            "train_loss": 0.65,
            "best_eval_loss": 1.22,
            "tokens_per_second": 950.0,
            "log_history": history,
        },
    )
    memory.set(
        keys.EVALUATION_REPORT,
        {
            "status": "PASS",
            "failures": [],
            "thresholds": [
                {
                    "name": "perplexity_max",
                    "limit": 50.0,
                    "value": 3.4,
                    "passed": True,
                    "message": "perplexity 3.4 within perplexity_max=50",
                }
            ],
            "metrics": {
                "fine_tuned": {"loss": 1.22, "perplexity": 3.39, "bleu": 21.5, "rougeL": 0.41},
                "base": {"loss": 2.9, "perplexity": 18.2, "bleu": 2.1, "rougeL": 0.12},
            },
            "improvement": {"loss_reduction": 0.58},
            "samples": [
                {
                    "prompt": "What is 2 + 2? <b>bold?</b>",
                    "reference": "4.",
                    "fine_tuned": "2 + 2 is 4.",
                    "base": "the the the",
                }
            ],
            "generation": {"do_sample": False},
            "behaviour": {
                "checks_file": "checks.jsonl",
                "max_new_tokens": 32,
                "pass_rate": 0.5,
                "base_pass_rate": 0.0,
                "prompts": [
                    {
                        "check": {"prompt": "Who are you?", "system": "Be brief.", "any_of": ["assistant"]},
                        "fine_tuned": {"answer": "An assistant.", "passed": True, "failed": []},
                        "base": {"answer": "", "passed": False, "failed": ["any_of: none of ['assistant'] appears"]},
                    },
                    {
                        "check": {"prompt": "Say <hi>", "none_of": ["bye"], "regex": "^h"},
                        "fine_tuned": {"answer": "bye", "passed": False, "failed": ["none_of: ['bye'] present"]},
                        "base": {"answer": "hello", "passed": True, "failed": []},
                    },
                ],
            },
        },
    )
    memory.set(
        keys.EXPORT_REPORT,
        {
            "artefacts": {
                "huggingface": {
                    "path": "/x/huggingface",
                    "kind": "adapter",
                    "verification": {
                        "top1_agreement": 1.0,
                        "max_abs_logit_diff": 0.0,
                        "greedy_match": 1.0,
                        "passed": True,
                    },
                },
                "gguf": {
                    "q8_0": {
                        "quantization": "q8_0",
                        "path": "/x/m.gguf",
                        "gguf_reader": {"tensor_count": 21, "vocab_size": 352, "chat_template_matches": True},
                        "llama_cpp": {
                            "top1_agreement": 1.0,
                            "max_abs_logit_diff": 0.05,
                            "greedy_match": 1.0,
                            "passed": True,
                        },
                    }
                },
                "ollama": {"path": "/x/Modelfile", "stop": ["<|im_end|>"], "num_ctx": 512, "template_verified": True},
            }
        },
    )
    memory.set(
        keys.INFERENCE_REPORT,
        {
            "models": [
                {
                    "name": "base",
                    "kind": "hf",
                    "device": "cpu",
                    "load_seconds": 0.5,
                    "tokens_per_second": 120.0,
                    "speed_vs_base": 1.0,
                    "peak_memory_bytes": 50_000_000,
                    "sample": "hi",
                    "behaviour": None,
                },
                {
                    "name": "gguf q8_0",
                    "kind": "gguf",
                    "device": "cpu (llama.cpp)",
                    "load_seconds": 0.1,
                    "tokens_per_second": 300.0,
                    "speed_vs_base": 2.5,
                    "peak_memory_bytes": 20_000_000,
                    "sample": "hi",
                    "behaviour": {
                        "pass_rate": 0.5,
                        "identical_rate": 0.5,
                        "first_words_rate": 1.0,
                        "chat_template": "gguf metadata",
                        "answers": [],
                    },
                },
            ],
            "skipped": [],
            "behaviour": {
                "checks": 2,
                "prompts": ["Who are you?", "Say <hi>"],
                "max_new_tokens": 32,
                "agreement_words": 8,
            },
        },
    )
    return memory


async def _render(make_context, tmp_path, memory) -> str:
    (tmp_path / "events.jsonl").write_text(
        "\n".join(
            json.dumps({"type": "plugin_end", "stage": st, "plugin": p, "status": "success", "seconds": s})
            for st, p, s in (("INPUT", "dataset_loader", 0.4), ("DO", "fine_tuning", 42.0))
        )
        + "\n{not json, a line being written",
        encoding="utf-8",
    )
    await RunReportPlugin().execute(make_context(Stage.OUTPUT, memory=memory, run_dir=tmp_path))
    return (tmp_path / "report.html").read_text(encoding="utf-8")


async def test_report_is_self_contained_with_plot_and_tables(make_context, tmp_path):
    html = await _render(make_context, tmp_path, full_memory())
    assert "<script" not in html and not re.search(r'(src|href)="https?://', html)  # opens offline
    assert html.count('class="series"') == 2  # training and validation loss
    for table in (
        "metrics-table",
        "samples-table",
        "export-table",
        "inference-table",
        "config-table",
        "dataset-table",
        "timings-table",
    ):
        assert f'id="{table}"' in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html  # sample text is escaped
    assert "58.0%" in html and "fine_tuning" in html and "42" in html


async def test_report_shows_the_behaviour_checks_and_their_rates_per_export(make_context, tmp_path):
    html = await _render(make_context, tmp_path, full_memory())
    section = html[html.index('id="behaviour-table"') : html.index('id="export"')]
    assert "Passed: fine-tuned <b>50%</b>, base <b>0%</b>" in html
    assert "Say &lt;hi&gt;" in section and "system: Be brief." in section  # escaped, with the system message
    assert "any of: &#34;assistant&#34;" in section and "none of: &#34;bye&#34;; matches /^h/" in section
    assert section.count('class="pass">passed') == 2 and "failed: none_of: [&#39;bye&#39;] present" in section
    assert "(empty answer)" in section
    exports = html[html.index('id="inference-behaviour-table"') : html.index('id="config"')]
    assert "first 8 words agree" in exports and "gguf metadata" in exports
    assert exports.count("<tr><td>") == 1  # only the models that answered the checks
    assert (
        '<td>gguf q8_0</td><td>gguf metadata</td><td class="num">50%</td><td class="num">50%</td><td class="num">100%</td>'
        in exports
    )


async def test_report_of_a_partial_run(make_context, tmp_path):
    memory = Memory()
    memory.set(keys.TRAINING_CONFIG, resolved_training_config(model_name_or_path="tiny"))
    html = await _render(make_context, tmp_path, memory)
    assert "No evaluation in this run." in html and "Nothing exported in this run." in html
    assert "No behaviour checks in this run" in html and "inference-behaviour-table" not in html
    assert "No data for Loss" in html


async def test_report_shows_the_target_and_realised_share_of_each_source(make_context, tmp_path):
    memory = full_memory()
    spec = {"mix_by": "tokens", "weights": {"alpaca": 3.0, "glaive": 1.0}, "seed": 0}
    memory.set(keys.DATASET_STATS, {"rows": 1299, "mixture": spec})
    html = await _render(make_context, tmp_path, memory)
    table = html[html.index('id="mixture-table"') : html.index('id="timings"')]
    assert "targets only" in html and "<td>alpaca</td>" in table and "75.0%" in table and "25.0%" in table

    sources = {
        "alpaca": {"rows": 984, "trained_tokens": 210928, "share_rows": 0.8221, "share_tokens": 0.7484},
        "glaive": {"rows": 213, "trained_tokens": 70928, "share_rows": 0.1779, "share_tokens": 0.2516},
    }
    for name, share in (("alpaca", 0.75), ("glaive", 0.25)):
        sources[name].update(target_share=share, passes=1.095 if name == "alpaca" else 0.792)
    realised = {"mix_by": "tokens", "seed": 0, "samples": 1197, "sources": sources}
    memory.set(keys.DATASET_TOKEN_STATS, {"tokens": 400000, "mixture": realised, "train": {"mixture": realised}})
    html = await _render(make_context, tmp_path, memory)
    table = html[html.index('id="mixture-table"') : html.index('id="timings"')]
    assert "Mixture of sources, by tokens" in html and "targets only" not in html
    assert (
        '<td>glaive</td><td class="num">25.0%</td><td class="num">213 (0.792)</td><td class="num">17.8%</td>'
        '<td class="num">70,928</td><td class="num">25.2%</td>' in table
    )
    assert "mixture.sources" not in html[html.index('id="dataset-table"') : html.index('id="mixture-table"')]


@needs_chromium
async def test_report_renders_in_headless_chromium(make_context, tmp_path):
    await _render(make_context, tmp_path, full_memory())
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
    ]
    url = (tmp_path / "report.html").as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "<svg" in dom and dom.count("<polyline") == 2
    assert dom.count("<table") >= 7 and "Export verification" in dom

    screenshot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


def test_chart_axes_and_empty_series():
    svg = line_chart_svg(
        {"a": [(0, 1.0), (10, 2.0)], "b": [(5, float("nan"))]}, title="T", x_label="step", y_label="loss"
    )
    assert svg.count("<polyline") == 1 and ">step<" in svg and ">loss<" in svg
    assert "No data for T" in line_chart_svg({}, title="T", x_label="x", y_label="y")
