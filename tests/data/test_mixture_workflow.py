"""A two-source mixture through the whole pipeline on the tiny model: training, the run report, and
``entity-train plan`` printing the realised shares."""

from __future__ import annotations

import json
import re

import pytest
from helpers.workflows import REPO, SAMPLE_DATA, step, write_workflow

from entity_training.cli import main


def mixture_workflow(tmp_path, **dataset):
    tools = tmp_path / "tools.jsonl"
    rows = [
        {"instruction": f"Spell the number {i} in words, then explain how you did it.", "output": f"{i}: " + "ok " * 40}
        for i in range(30)
    ]
    tools.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return write_workflow(
        tmp_path,
        run={"name": "mix", "output_dir": tmp_path / "run", "seed": 2},
        dataset={
            "dataset_path": None,
            "sources": [{"path": SAMPLE_DATA, "name": "sample", "weight": 1}, {"path": tools, "weight": 1}],
            "validation_split": 0.1,
            **dataset,
        },
        training={"training_method": "lora", "max_steps": 2, "batch_size": 2, "logging_steps": 1},
        preparation={"max_seq_length": 256, "cache_dir": tmp_path / "tokenized"},
        output=[step("run_report")],
    )


@pytest.mark.slow
def test_a_two_source_mixture_trains_and_the_report_shows_its_shares(tmp_path):
    config = mixture_workflow(tmp_path, mix_by="tokens")
    assert main(["--config", str(config), "--yes"]) == 0
    memory = json.loads((tmp_path / "run" / "memory.json").read_text())["entries"]
    mixture = memory["dataset.token_stats"]["mixture"]
    assert set(mixture["sources"]) == {"sample", "tools"}
    for entry in mixture["sources"].values():
        assert entry["target_share"] == 0.5 and abs(entry["share_tokens"] - 0.5) < 0.02
    # the source holding fewer trained tokens is repeated to reach half of them, the other sub-sampled
    fewer, more = sorted(mixture["sources"].values(), key=lambda entry: entry["available_trained_tokens"])
    assert fewer["passes"] > 1 > more["passes"]
    assert memory["training.result"]["steps"] == 2
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert 'id="mixture-table"' in html and "<td>tools</td>" in html


def test_plan_prints_the_realised_share_of_each_source(tmp_path, capsys):
    config = mixture_workflow(tmp_path, mix_by="rows")
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Mixture of sources, by rows" in out
    table = out[out.index("Mixture of sources, by rows") :]
    for name in ("sample", "tools"):
        # the first line of the source's row: target share, share of rows, share of trained tokens
        line = next(line for line in table.splitlines() if re.match(rf"\W*{name}\b", line))
        target, share_rows, _ = (float(value) for value in re.findall(r"([\d.]+)%", line))
        assert target == 50.0 and share_rows == pytest.approx(50, abs=1), table


def test_plan_of_a_workflow_that_prepares_no_data_prints_the_targets(tmp_path, capsys):
    config = write_workflow(
        tmp_path,
        dataset={"dataset_path": None, "sources": [{"path": SAMPLE_DATA, "weight": 3}, {"path": "b/*.jsonl"}]},
        stop_after="PARSE",
    )
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    assert "75.0%" in out and "25.0%" in out and "targets" in out


def test_the_example_mixture_config_mixes_its_sources_as_documented(tmp_path, monkeypatch):
    from entity_training import Stage
    from entity_training.commands import run_until
    from entity_training.overrides import parse_set_argument
    from entity_training.workflow import load_workflow
    from plugins import memory_keys

    monkeypatch.chdir(REPO)
    overrides = [
        parse_set_argument(s)
        for s in ("training_config.model_name_or_path=tiny", f"data_preparation.cache_dir={tmp_path}")
    ]
    memory = run_until(load_workflow(REPO / "configs" / "mixture.yaml", overrides=overrides), Stage.THINK)
    mixture = memory.get(memory_keys.DATASET_TOKEN_STATS)["mixture"]
    assert mixture["mix_by"] == "tokens"
    assert mixture["sources"]["pebble"]["target_share"] == 0.25
    for entry in mixture["sources"].values():
        assert abs(entry["share_tokens"] - entry["target_share"]) < 0.01
