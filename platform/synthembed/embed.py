"""Batch-embed a file of texts on Ray Data with any model the project can load.

Input: .txt (one text per line), .jsonl (a `text` field) or .parquet (a `text` column). Output: Parquet
in `<output>/embeddings/` with `text` and `embedding` columns, written by Ray Data in parallel across `concurrency` actors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from synthembed.config import StrictModel, dump_config
from synthembed.model import Embedder, ModelConfig

log = logging.getLogger(__name__)


class EmbedConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    concurrency: int = Field(1, ge=1, description="embedding actors (each holds one model copy)")
    rows_per_batch: int = Field(64, ge=1, description="rows handed to one actor call")


class _EmbedBatch:
    """A Ray Data actor: loads the model once, then embeds batches of rows."""

    def __init__(self, model: ModelConfig, instruction: str | None):
        self.embedder = Embedder.load(model)
        self.instruction = instruction

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        batch["embedding"] = list(self.embedder.encode(texts, instruction=self.instruction))
        return batch


def read_texts(path: Path):
    import ray.data

    if not path.exists():
        raise FileNotFoundError(f"--input {path}: no such file")
    if path.suffix == ".parquet" or path.is_dir():
        return ray.data.read_parquet(str(path), columns=["text"])
    if path.suffix == ".jsonl":
        return ray.data.read_json(str(path)).select_columns(["text"])
    if path.suffix == ".txt":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return ray.data.from_items([{"text": t} for t in lines])
    raise ValueError(f"--input {path}: expected .txt, .jsonl or .parquet")


def run(config: EmbedConfig, input_path: Path, output: Path, instruction: str | None = None) -> Path:
    import ray

    ray.init(ignore_reinit_error=True)
    data = read_texts(input_path)
    embedded = data.map_batches(
        _EmbedBatch,
        fn_constructor_kwargs={"model": config.model, "instruction": instruction},
        batch_size=config.rows_per_batch,
        concurrency=config.concurrency,
    )
    output.mkdir(parents=True, exist_ok=True)
    embedded.write_parquet(str(output / "embeddings"))
    (output / "config.yaml").write_text(dump_config(config))
    return output
