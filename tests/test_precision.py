"""dtype "auto": probed per machine, explicit settings win, and bf16 stays close to fp32."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from synthembed.model import Embedder, precision
from synthembed.model.precision import AUTO_DTYPE_ENV, autocast_dtype, cpu_native_bf16, inference_dtype

CPU = torch.device("cpu")
TEXTS = ["a short one", "a somewhat longer text about embeddings and their many uses in retrieval",
         "Ein deutscher Satz über Katzen.", "数据 增强", "the end"]


def test_explicit_dtype_and_precision_always_win(monkeypatch):
    monkeypatch.setenv(AUTO_DTYPE_ENV, "bfloat16")
    assert inference_dtype("float32", CPU) == torch.float32
    assert autocast_dtype("float32", CPU) is None
    monkeypatch.setenv(AUTO_DTYPE_ENV, "float32")
    assert inference_dtype("bfloat16", CPU) == torch.bfloat16
    assert autocast_dtype("bf16", CPU) == torch.bfloat16


def test_auto_follows_the_cpu_probe(monkeypatch):
    monkeypatch.delenv(AUTO_DTYPE_ENV, raising=False)
    want = torch.bfloat16 if cpu_native_bf16() else torch.float32
    assert inference_dtype("auto", CPU) == want
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if cpu_native_bf16() else None)
    assert str(want).removeprefix("torch.") in precision.describe(CPU)
    emb = Embedder.load("tiny-llama")
    assert next(emb.model.parameters()).dtype == want


def test_auto_env_override_and_its_error(monkeypatch):
    monkeypatch.setenv(AUTO_DTYPE_ENV, "float32")
    assert inference_dtype("auto", torch.device("cuda")) == torch.float32
    monkeypatch.setenv(AUTO_DTYPE_ENV, "fp8")
    with pytest.raises(ValueError, match=AUTO_DTYPE_ENV):
        inference_dtype("auto", CPU)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/cpuinfo"), reason="Linux only")
def test_cpu_probe_agrees_with_the_kernel_flags():
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split()
    assert cpu_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_evaluation_cache_key_names_the_dtype_auto_settles_on(monkeypatch):
    from synthembed.evaluate.config import EvalModelConfig
    from synthembed.evaluate.encoders import make_spec

    monkeypatch.setenv(AUTO_DTYPE_ENV, "float32")
    fp32 = make_spec(EvalModelConfig(source="tiny-llama"))
    monkeypatch.setenv(AUTO_DTYPE_ENV, "bfloat16")
    bf16 = make_spec(EvalModelConfig(source="tiny-llama"))
    assert (fp32.model["dtype"], bf16.model["dtype"]) == ("float32", "bfloat16")
    assert fp32.fingerprint() != bf16.fingerprint()
    assert bf16.fingerprint() == make_spec(EvalModelConfig(source="tiny-llama", dtype="bfloat16")).fingerprint()
    # compiled vectors are another function's (fused kernels round differently): never served from eager's cache
    compiled = make_spec(EvalModelConfig(source="tiny-llama", dtype="bfloat16", compile=True))
    assert compiled.fingerprint() != bf16.fingerprint()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_bf16_padding_changes_an_embedding_only_within_rounding(side):
    emb = Embedder.load("tiny-llama", dtype="bfloat16")
    alone = np.stack([emb.encode([t], batch_size=1, normalize=False)[0] for t in TEXTS])
    with torch.inference_mode():
        batched = emb.embed(**emb.collate(emb.tokenize(TEXTS), padding_side=side)).float().numpy()
    assert _cosines(alone, batched).min() > 0.995


@pytest.mark.slow
def test_bf16_vectors_match_fp32_on_a_real_model(shared_data):
    import csv
    import gzip

    with gzip.open(shared_data / "stsb_multi_mt" / "stsb-de-test.csv.gz", "rt", encoding="utf-8") as f:
        texts = [row[0] for _, row in zip(range(32), csv.reader(f))]
    fp32 = Embedder.load("gemma3-270m", max_length=128, dtype="float32").encode(texts)
    bf16 = Embedder.load("gemma3-270m", max_length=128, dtype="bfloat16").encode(texts)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert _cosines(fp32, bf16).min() > 0.98


def test_driver_threads_override_ray_single_thread_default():
    """A process started as Ray starts a job's driver (OMP_NUM_THREADS=1) computes on every core it may use."""
    import subprocess
    import sys

    from synthembed.model.threads import available_cores

    code = ("import torch; from synthembed.model.threads import use_driver_threads; before = torch.get_num_threads(); "
            "n = use_driver_threads(); print(before, n, torch.get_num_threads()); use_driver_threads(1); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", str(available_cores()), str(available_cores()), "1"]
