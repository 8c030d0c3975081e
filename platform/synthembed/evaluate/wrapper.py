"""mteb encoder wrapper around the project's encoders, following the paper's evaluation protocol.

Protocol (method.md A.7, as coded in unilm's e5 scripts):
- instruction strings: mteb's own table, i.e. the task's `metadata.prompt` (e.g. SciFact's query prompt,
  Banking77's prompt) or, where a task has none, its task type's `abstask_prompt` ("Retrieve semantically
  similar text." for STS, "Retrieve parallel sentences." for bitext mining). These are the paper's strings.
  A config can override a task's instruction by name.
- retrieval-like (asymmetric) tasks: the instruction goes on queries only, documents are encoded raw;
- every other task type (STS, bitext, classification, clustering, pair classification, ...): the
  instruction goes on every input;
- classification: the paper switches L2 normalisation off; `normalize_classification` chooses, and the
  job runs both protocols side by side (mteb's default = normalised);
- similarity: cosine (so normalisation does not change STS, bitext or retrieval scores).

The formatting itself is `synthembed.model.format_text`, reached through `Embedder.encode(texts,
instruction=...)`: no second copy of the template exists here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from mteb.models.abs_encoder import AbsEncoder, PromptSource
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.encoders import EncoderSpec, LoadedEncoder
from synthembed.model.formatting import format_texts

log = logging.getLogger(__name__)

# Task types whose two sides play different roles: instruction on the query side only.
ASYMMETRIC_TYPES = {"Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking"}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class SynthEmbedEncoder(AbsEncoder):
    """An `mteb.EncoderProtocol` model: `encode(dataloader, task_metadata=..., prompt_type=...)`.

    Texts go through the embedding cache first; the misses are encoded in this process, or on Ray Data
    workers when there are at least `ray_min_texts` of them.
    """

    # The task's own prompt (mteb's copy of the paper's table) wins over generic per-type defaults.
    prompt_priority = (PromptSource.CUSTOM_PROMPT, PromptSource.DEFAULT_TASK_PROMPT)

    def __init__(
        self,
        spec: EncoderSpec,
        name: str = "synthembed/model",
        instructions: dict[str, str] | None = None,
        use_instructions: bool | None = None,
        normalize: bool = True,
        normalize_classification: bool | None = None,
        cache: EmbeddingCache | None = None,
        ray_options: dict | None = None,
        encoder: LoadedEncoder | None = None,
        show_progress: bool = False,
    ):
        self.spec = spec
        self._encoder = encoder
        self.prompts_dict = dict(instructions or {}) or None
        self.use_instructions = spec.kind == "decoder" if use_instructions is None else use_instructions
        self.normalize = normalize
        self.normalize_classification = normalize if normalize_classification is None else normalize_classification
        self.cache = cache
        self.ray_options = ray_options  # None: never use Ray; else {num_workers, batch_size, min_texts, ...}
        self.show_progress = show_progress
        self.stats = {"texts": 0, "encoded_local": 0, "encoded_ray": 0, "cache_hits": 0, "encode_seconds": 0.0}
        self.calls: list[dict] = []  # one record per encode call: task, side, instruction (for the report)
        if "/" not in name:
            name = f"synthembed/{name}"
        self.mteb_model_meta = ModelMeta.create_empty(
            {
                "name": name,
                "revision": spec.fingerprint(),
                "similarity_fn_name": ScoringFunction.COSINE,
                "use_instructions": self.use_instructions,
                "max_tokens": spec.max_length,
                "framework": ["PyTorch"],
            }
        )

    # ------------------------------------------------------------------------------------- protocol
    @property
    def encoder(self) -> LoadedEncoder:
        if self._encoder is None:
            self._encoder = LoadedEncoder(self.spec)
        return self._encoder

    def instruction_for(self, task_metadata, prompt_type: PromptType | None) -> str | None:
        """The instruction for one side of a task, or None when that side is encoded raw."""
        if not self.use_instructions:
            return None
        if task_metadata.type in ASYMMETRIC_TYPES and prompt_type != PromptType.query:
            return None
        # Symmetric tasks carry the query-side instruction on every input.
        text = self.get_instruction(task_metadata, PromptType.query)
        return text.strip() or None

    def normalize_for(self, task_metadata) -> bool:
        if task_metadata.type in ("Classification", "MultilabelClassification"):
            return self.normalize_classification
        return self.normalize

    # ------------------------------------------------------------------------------------- encoding
    def encode(
        self,
        inputs,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = self.instruction_for(task_metadata, prompt_type)
        emb = self.encode_texts(texts, instruction)
        normalize = self.normalize_for(task_metadata)
        self.calls.append(
            {
                "task": task_metadata.name,
                "subset": hf_subset,
                "split": hf_split,
                "side": prompt_type.value if prompt_type else None,
                "texts": len(texts),
                "instruction": instruction,
                "normalize": normalize,
            }
        )
        return l2_normalize(emb) if normalize else emb

    def encode_texts(self, texts: list[str], instruction: str | None) -> np.ndarray:
        """Un-normalised embeddings: cache hits, then the misses (locally or on Ray), then cache writes."""
        start = time.perf_counter()
        self.stats["texts"] += len(texts)
        keys = self._input_strings(texts, instruction)
        cached = self.cache.get(keys) if self.cache is not None else [None] * len(texts)
        missing = [i for i, v in enumerate(cached) if v is None]
        self.stats["cache_hits"] += len(texts) - len(missing)
        out: np.ndarray | None = None
        if missing:
            todo = [texts[i] for i in missing]
            use_ray = self.ray_options is not None and len(todo) >= self.ray_options.get("min_texts", 0)
            if use_ray:
                from synthembed.evaluate.ray_encode import ray_encode  # deferred: imports Ray Data

                opts = {k: v for k, v in self.ray_options.items() if k != "min_texts"}
                fresh = ray_encode(self.spec, todo, instruction, **opts)
                self.stats["encoded_ray"] += len(todo)
            else:
                fresh = self.encoder.encode_raw(todo, instruction, show_progress=self.show_progress)
                self.stats["encoded_local"] += len(todo)
            if self.cache is not None:
                self.cache.put([keys[i] for i in missing], fresh)
            out = np.empty((len(texts), fresh.shape[1]), dtype=np.float32)
            out[missing] = fresh
        for i, vec in enumerate(cached):
            if vec is not None:
                if out is None:
                    out = np.empty((len(texts), vec.shape[0]), dtype=np.float32)
                out[i] = vec
        if out is None:  # no texts at all
            out = np.zeros((0, 1), dtype=np.float32)
        self.stats["encode_seconds"] += time.perf_counter() - start
        return out

    def _input_strings(self, texts: list[str], instruction: str | None) -> list[str]:
        # The cache key is the exact string the model reads (formatted by the shared format_text).
        if self.spec.kind == "decoder":
            return format_texts(texts, instruction)
        return list(texts)
