"""Ray Data corpus encoding and a real small run of one task per type on the embedded model (gemma3-270m)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthembed.evaluate import EvaluateConfig, run
from synthembed.evaluate.config import EvalModelConfig
from synthembed.evaluate.encoders import LoadedEncoder, make_spec
from synthembed.evaluate.ray_encode import ray_encode

pytestmark = pytest.mark.slow


def test_ray_encoding_matches_in_process_encoding(ray_cluster):
    spec = make_spec(EvalModelConfig(source="tiny-llama", max_length=64, batch_size=8))
    texts = [("word " * (i % 17 + 1)) + str(i) for i in range(150)]  # mixed lengths: order must be restored
    local = LoadedEncoder(spec).encode_raw(texts, "Retrieve parallel sentences.")
    distributed = ray_encode(spec, texts, "Retrieve parallel sentences.", num_workers=2, batch_size=16)
    assert distributed.shape == local.shape
    np.testing.assert_allclose(distributed, local, atol=1e-4)


def test_embedded_model_small_run_one_task_per_type(ray_cluster, shared_data, tmp_path):
    """gemma3-270m on small slices of all four local task types; the SciFact corpus goes through Ray."""
    D = shared_data
    cfg = EvaluateConfig(
        model={"source": "gemma3-270m", "max_length": 64, "batch_size": 16, "name": "gemma3-270m-base"},
        tasks=[
            {"path": str(D / "stsbenchmark"), "limit": 40},
            {"path": str(D / "scifact"), "limit": 8, "corpus_limit": 64},
            {"path": str(D / "tatoeba"), "subsets": ["deu-eng"], "limit": 40},
            {"path": str(D / "banking77"), "limit": 77, "train_limit": 154},
        ],
        output_dir=str(tmp_path / "gemma"),
        ray={"enabled": True, "num_workers": 2, "min_texts": 60, "batch_size": 16},
        cache_path=str(tmp_path / "emb.sqlite"),
        reference_scores=str(D / "REFERENCE_SCORES.md"),
    )
    out = run(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    scores = {(r["task"], r["subset"], r["protocol"]): r["score"] for r in manifest["scores"]}
    assert set(scores) == {
        ("STSBenchmark", "default", "default"),
        ("SciFact", "default", "default"),
        ("Tatoeba", "deu-eng", "default"),
        ("Banking77Classification", "default", "mteb"),
        ("Banking77Classification", "default", "paper"),
    }
    # a real model on real data. The *base* model is a weak embedder (full STSb ~20 Spearman), so on 40
    # pairs only the sign is noise; bitext and intent classification must still beat chance clearly.
    assert -100 <= scores[("STSBenchmark", "default", "default")] <= 100
    assert scores[("Tatoeba", "deu-eng", "default")] > 1 / 40 * 100
    assert scores[("Banking77Classification", "default", "mteb")] > 100 / 77
    assert manifest["encode_stats"]["encoded_ray"] >= 64  # the corpus went through Ray Data
    assert manifest["kind"] == "decoder"
    report = (out / "report.md").read_text()
    assert "paper (no L2 normalisation)" in report and "8 of 300" in report
