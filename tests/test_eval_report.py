"""Reports: side-by-side runs with a delta column, reference columns, subset marking, chart; --compare CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthembed.evaluate import compare



def _run(folder: Path, label: str, sts: float, bank_paper: float) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"task": "STSBenchmark", "subset": "default", "protocol": "default", "metric": "cosine_spearman",
         "score": sts, "rows": 1379, "full_rows": 1379, "source": "local:x"},
        {"task": "Tatoeba", "subset": "deu-eng", "protocol": "default", "metric": "f1",
         "score": 50.0, "rows": 100, "full_rows": 1000, "source": "local:y"},
        {"task": "Banking77Classification", "subset": "default", "protocol": "mteb", "metric": "accuracy",
         "score": 70.0, "rows": 3080, "full_rows": 3080, "source": "local:z"},
        {"task": "Banking77Classification", "subset": "default", "protocol": "paper", "metric": "accuracy",
         "score": bank_paper, "rows": 3080, "full_rows": 3080, "source": "local:z"},
    ]
    manifest = {"label": label, "kind": "decoder", "model": {"source": label, "max_length": 128},
                "output_dir": str(folder), "scores": rows,
                "instructions": {"STSBenchmark|all": "Retrieve semantically similar text."}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_compare_two_runs_against_references(shared_data, tmp_path):
    a = _run(tmp_path / "base", "base", 40.0, 60.0)
    b = _run(tmp_path / "ft", "finetuned", 55.5, 66.25)
    report = compare([a, b], tmp_path / "cmp", shared_data / "REFERENCE_SCORES.md", ["all-MiniLM-L6-v2"])
    text = report.read_text()
    assert "| base | finetuned | Δ (finetuned − base) | ref: all-MiniLM-L6-v2 |" in text
    assert "| STSBenchmark | default |  | 1379 | 40.00 | 55.50 | +15.50 | 82.03 |" in text
    assert "| Tatoeba | deu-eng |  | 100 of 1000 | 50.00 | 50.00 | +0.00 | 7.89 |" in text
    # the paper protocol has no public reference (those are mteb-default numbers)
    assert "| Banking77Classification | default | paper (no L2 normalisation) | 3080 | 60.00 | 66.25 | +6.25 |  |" in text
    assert "not comparable to the reference columns" in text
    png = tmp_path / "cmp" / "chart.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_unfinished_runs(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        compare([tmp_path / "half"], tmp_path / "out")


def test_job_compare_mode(shared_data, tmp_path, capsys):
    from synthembed.cli import main

    a = _run(tmp_path / "a", "a", 10.0, 20.0)
    b = _run(tmp_path / "b", "b", 30.0, 40.0)
    assert main(["evaluate", "--compare", str(a), str(b), "--out", str(tmp_path / "o"),
                     "--reference", str(shared_data / "REFERENCE_SCORES.md")]) == 0
    out = capsys.readouterr().out
    assert "Comparison: a vs b" in out and "ref: e5-mistral-7b-instruct" in out
    # a bad config is reported as a config error naming the key, before any work
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("evaluate:\n  tasks: [{path: x}]\n  modle: {}\n")
    assert main(["evaluate", "--config", str(cfg)]) == 2
    assert "modle: unknown key" in capsys.readouterr().err
