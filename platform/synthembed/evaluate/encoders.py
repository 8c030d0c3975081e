"""The two kinds of model the evaluation job scores, behind one small interface.

- `decoder`: the project's own `Embedder` (decoder LLM, last-token pooling, "Instruct: ...\\nQuery: ..."
  formatting from `synthembed.model.format_text`), optionally with a LoRA adapter;
- `sentence-transformers`: a sentence-transformers folder (e.g. the packaged all-MiniLM-L6-v2 baseline),
  encoded as sentence-transformers does it, without instructions.

`kind: auto` picks sentence-transformers when the resolved folder has a `modules.json`.
Both return *un-normalised* float32 vectors from `encode_raw`; normalisation is the caller's choice
(the paper's classification protocol switches it off). A sentence-transformers model that ends in a
`Normalize` module returns unit vectors regardless.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synthembed.model.embedder import Embedder, ModelConfig, pick_device
from synthembed.model.precision import inference_dtype
from synthembed.model.loading import resolve_model_dir
from synthembed.packaged import ST_MODELS, st_model_path
from synthembed.stage import files_fingerprint

log = logging.getLogger(__name__)

Kind = Literal["decoder", "sentence-transformers"]


def resolve_source(source: str) -> Path:
    """Local folder for `source`: a packaged sentence-transformers model, else `resolve_model_dir`."""
    if source in ST_MODELS:
        return st_model_path(source)
    return resolve_model_dir(source)


def detect_kind(folder: Path) -> Kind:
    return "sentence-transformers" if (Path(folder) / "modules.json").is_file() else "decoder"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a process (the driver or a Ray actor) needs to load the same encoder. Picklable."""

    kind: Kind
    model: dict  # a ModelConfig dump (decoder) or {"source": folder} (sentence-transformers)
    folder: str
    batch_size: int = 32
    max_length: int = 512

    def fingerprint(self) -> str:
        """Identifies the embedding function: weights, adapter, truncation, dtype, pooling, compiled or not."""
        parts = [self.kind, files_fingerprint(self.folder), f"max_length={self.max_length}"]
        if self.kind == "decoder":
            parts.append(f"dtype={self.model.get('dtype')}")
            parts.append("pooling=last-eos")
            if self.model.get("compile"):  # fused kernels round differently (min cosine to eager ~0.98 in bf16)
                parts.append("compiled")
            if self.model.get("adapter"):
                parts.append("adapter=" + files_fingerprint(self.model["adapter"]))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def make_spec(model_config, kind: str = "auto") -> EncoderSpec:
    """Resolve the source once (converting a GGUF if needed) and fix the encoder kind."""
    folder = resolve_source(model_config.source)
    if kind == "auto":
        kind = detect_kind(folder)
    cfg = model_config.model_dump(mode="json")
    cfg.pop("kind", None)
    cfg.pop("name", None)
    max_length = model_config.max_length
    if kind == "decoder":
        cfg["source"] = str(folder)  # workers load the converted folder, no second conversion
        # The cache key must name the dtype that computes the vectors, so "auto" is settled here, once,
        # and every worker computes in it (bf16 and fp32 vectors of one model are different functions).
        cfg["dtype"] = str(inference_dtype(cfg["dtype"], pick_device(cfg["device"]))).removeprefix("torch.")
    else:
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():  # the model's own limit (256 for MiniLM) unless the config asks for less
            import json

            own = json.loads(st_config.read_text()).get("max_seq_length")
            max_length = min(max_length, own) if own else max_length
    return EncoderSpec(kind=kind, model=cfg, folder=str(folder), batch_size=model_config.batch_size,
                       max_length=max_length)


class LoadedEncoder:
    """A loaded model; `encode_raw(texts, instruction)` gives un-normalised float32 vectors."""

    def __init__(self, spec: EncoderSpec):
        self.spec = spec
        if spec.kind == "decoder":
            self.embedder = Embedder.load(ModelConfig(**spec.model))
            self.st = None
        else:
            from sentence_transformers import SentenceTransformer

            device = spec.model.get("device", "auto")
            # "auto": sentence-transformers picks cuda when present, like the Embedder does
            self.st = SentenceTransformer(spec.folder, device=None if device == "auto" else device)
            self.st.max_seq_length = spec.max_length
            self.embedder = None

    @property
    def dim(self) -> int:
        return self.embedder.dim if self.embedder is not None else self.st.get_sentence_embedding_dimension()

    @property
    def uses_instructions(self) -> bool:
        return self.spec.kind == "decoder"

    def encode_raw(self, texts: Sequence[str], instruction: str | None, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.spec.kind == "decoder":
            return self.embedder.encode(list(texts), instruction=instruction, batch_size=self.spec.batch_size,
                                        normalize=False, show_progress=show_progress)
        if instruction:
            raise ValueError("sentence-transformers models are evaluated without instructions")
        emb = self.st.encode(list(texts), batch_size=self.spec.batch_size, convert_to_numpy=True,
                             normalize_embeddings=False, show_progress_bar=show_progress)
        return np.asarray(emb, dtype=np.float32)
