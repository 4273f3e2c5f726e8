"""A training process does not import bitsandbytes unless it quantizes, and bitsandbytes stays usable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plugins.training.lean_imports import needs_bitsandbytes

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from plugins.training.lean_imports import training_imports
with training_imports(hide_bitsandbytes=True):
    import plugins.training.trainer, peft  # the Trainer's imports pull peft, and peft pulls bitsandbytes
hidden = "bitsandbytes" in sys.modules
import bitsandbytes, peft.import_utils
print(hidden, peft.import_utils.is_bnb_available(), peft.import_utils.is_bnb_4bit_available())
"""


def _probe(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_the_training_imports_skip_bitsandbytes_and_leave_it_importable():
    pytest.importorskip("bitsandbytes")
    assert _probe(PROBE) == ["False", "True", "True"]


@pytest.mark.parametrize(
    ("config", "needed"),
    [
        ({"load_in_4bit": False, "optim": "adamw_torch_fused"}, False),
        ({"load_in_4bit": True, "optim": "adamw_torch_fused"}, True),
        ({"load_in_4bit": False, "optim": "adamw_8bit"}, True),
        ({"load_in_4bit": False, "optim": "paged_adamw_8bit"}, True),
        ({"load_in_4bit": False, "optim": "adafactor"}, False),
    ],
)
def test_quantized_weights_and_8bit_optimizers_need_bitsandbytes(config, needed):
    assert needs_bitsandbytes(**config) is needed
