"""The harness reproduces public MTEB scores: all-MiniLM-L6-v2 through jobs/evaluate.py, full local sets.

STSBenchmark 82.03, SciFact 64.51, Banking77 80.04, Tatoeba deu-eng 7.89, each within 1.0 point.
(~3-8 min on 2 cores; most of it is the 5,183 SciFact abstracts.)
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_minilm_matches_public_scores_through_the_job(shared_data, tmp_path, capsys):
    from synthembed.cli import main

    bench = _load("minilm_reproduction", REPO / "bench" / "minilm_reproduction.py")
    out = tmp_path / "minilm"
    assert main(["evaluate", *bench.job_args(shared_data, out, tmp_path / "emb.sqlite")]) == 0
    assert "resolved evaluate config" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sentence-transformers"
    assert all(v is None for v in manifest["instructions"].values())  # no instructions for this encoder
    rows = bench.compare(manifest)
    assert len(rows) == 4
    for row in rows:
        assert row["abs_diff"] <= 1.0, row
    report = (out / "report.md").read_text()
    assert "ref: all-MiniLM-L6-v2" in report and (out / "config.yaml").is_file()
