"""Turn a training checkpoint into the run's deliverables: adapter/ (peft) and merged/ (plain HF).

merged/ is the base backbone with LoRA folded in (peft `merge_and_unload`), saved as an ordinary
Hugging Face folder, so `Embedder.load(merged)`, vLLM and sentence-transformers read it without peft.
For sentence-transformers it also gets modules.json with last-token pooling + normalisation, and its
tokenizer appends EOS itself (ST does not append one; our `Embedder.tokenize` strips a tokenizer's
EOS and appends exactly one, so it gives the same ids either way).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from synthembed.model import Embedder

log = logging.getLogger(__name__)


def copy_adapter(checkpoint_dir: Path, out: Path) -> Path:
    src = checkpoint_dir / "adapter"
    if not (src / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no adapter/adapter_config.json; not a synthembed checkpoint")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    # the adapter's base_model_name_or_path points at the resolved local folder of the base model
    return out


def tokenizer_appending_eos(tokenizer):
    """Make the fast tokenizer's post-processor append EOS (keeping BOS if it adds one), and give it a pad
    token (EOS, as `Embedder` pads) when it has none: sentence-transformers cannot batch texts without one
    (the Mistral tokenizer has none)."""
    from tokenizers.processors import TemplateProcessing

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    if probe and probe[-1] == tokenizer.eos_token_id:
        return tokenizer
    adds_bos = bool(probe) and bos is not None and probe[0] == tokenizer.bos_token_id
    head = f"{bos}:0 " if adds_bos else ""
    specials = [(eos, tokenizer.eos_token_id)] + ([(bos, tokenizer.bos_token_id)] if adds_bos else [])
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{head}$A:0 {eos}:0", pair=f"{head}$A:0 {eos}:0 $B:1 {eos}:1", special_tokens=specials
    )
    return tokenizer


def write_sentence_transformers_files(out: Path, max_length: int, dim: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": dim, "pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False,
               "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False, "include_prompt": True}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)


def export_merged(model_config, adapter_dir: Path, out: Path) -> Path:
    """base + adapter -> merged float32 HF folder (plus sentence-transformers metadata)."""
    # compile=False: model.compile is for serving and evaluation; merging would pay minutes of compiling for nothing
    embedder = Embedder.load(model_config, adapter=str(adapter_dir), device="cpu", dtype="float32", compile=False)
    merged = embedder.model.merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    tokenizer_appending_eos(embedder.tokenizer).save_pretrained(tmp)
    write_sentence_transformers_files(tmp, model_config.max_length, merged.config.hidden_size)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("merged model written to %s", out)
    return out
