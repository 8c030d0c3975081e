"""The `train:` section of a cluster profile (configs/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthembed.config import StrictModel
from synthembed.model import ModelConfig


class DataSource(StrictModel):
    """One Parquet source in the data-contract schema, mixed in with a sampling ratio.

    `ratio` is the expected number of times each row is used per epoch: 0.1 keeps a random tenth
    (the paper's ELI5 / Quora settings), 1 keeps all, 2.5 repeats every row twice plus a random half.
    """

    path: str = Field(..., description="a .parquet file, a folder of them, or a generate output folder (examples/)")
    ratio: float = Field(1.0, gt=0, description="sampling ratio per epoch (0.1 = a tenth, 2 = twice)")
    instruction: str | None = Field(None, description="instruction for rows whose `instruction` is empty (labeled data)")


class LoraSettings(StrictModel):
    """peft LoRA. The paper: rank 16 on all linear layers; alpha/dropout follow RankLLaMA (assumed)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or module names (q_proj, ...)")


class TrainConfig(StrictModel):
    """LoRA + InfoNCE fine-tuning on Ray Train. Batch sizes count queries (each brings its documents)."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(max_length=512))
    data: list[DataSource] = Field(default_factory=list, description="training sources (generated + labeled)")
    lora: LoraSettings = Field(default_factory=LoraSettings)

    # loss
    temperature: float = Field(0.02, gt=0, description="InfoNCE temperature tau (paper: 0.02)")
    hard_negatives: bool = Field(True, description="add each row's hard_negative as an extra document column")
    mask_duplicates: bool = Field(True, description="mask in-batch documents whose text equals the row's positive")
    false_negative_margin: float | None = Field(
        None, ge=0, le=2,
        description="mask in-batch documents whose cosine beats the positive's by more than this (Qwen3-Embedding: 0.1)",
    )

    # batch: batch_size queries per optimizer step over ALL workers, split evenly; each worker embeds
    # its share in chunks of chunk_size (GradCache), so the contrastive batch is not limited by memory.
    batch_size: int = Field(16, ge=1, description="global contrastive batch (queries per step, all workers)")
    chunk_size: int | None = Field(None, ge=1, description="GradCache chunk per worker; None = one pass")
    # Texts of a step are sorted by length and embedded micro_batch_size at a time, so little goes to
    # padding (bench/train.py: 8 halves step time and peak memory on 2 CPU cores vs one padded pass).
    micro_batch_size: int | None = Field(
        8, ge=1, description="texts per forward pass when chunk_size is None (GPUs: 32-128); None = one pass"
    )
    # A batch mixing six task types and ten languages offers mostly negatives a model tells apart by format or
    # script alone; a batch of one task type makes its in-batch negatives the rows it must really tell apart
    # (sentence-transformers' multi-dataset round robin, Nomic Embed's one-source batches).
    same_task_batches: bool = Field(
        False, description="fill each global batch from one task_type (the leftover of each type fills mixed batches; "
        "rows without a task_type form one group)"
    )

    # optimisation (paper: lr 1e-4, 100 warm-up steps of ~880 then linear decay, weight decay 0.1, 1 epoch)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int | None = Field(None, ge=0, description="warm-up in steps (or give warmup_ratio)")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="warm-up as a share of the run; default 0.1")
    allow_unusual_schedule: bool = Field(
        False, description="run even when the plan check finds a problem (warm-up >= the run, < 5 steps, ...)"
    )
    weight_decay: float = Field(0.1, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (None: epochs decide)")
    max_grad_norm: float | None = Field(None, gt=0)
    gradient_checkpointing: bool = Field(False, description="recompute activations (saves memory; slower on CPU)")
    compile: bool = Field(
        False, description="run the LoRA-wrapped backbone through torch.compile (inductor, dynamic shapes): each worker "
        "compiles for minutes at its first step, then steps run faster (bench/results/train.json, side "
        "ours_bf16_compile); worth it for runs of hundreds of steps, not for the demo's twenty",
    )
    precision: Literal["auto", "float32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32"
    )
    seed: int = 0
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker (None: CPUs per worker)")

    # Ray Train
    backend: Literal["ray", "local"] = Field(
        "ray", description="ray: Ray Train TorchTrainer; local: the same loop in this process (debugging, no Ray)"
    )
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of the workers: STRICT_SPREAD puts each on its own node"
    )
    storage_path: str = Field("runs", description="RunConfig.storage_path: shared storage on a multi-node cluster")
    name: str = Field("train", description="RunConfig.name; the same (storage_path, name) resumes the run")
    output_dir: str | None = Field(None, description="where adapter/ and merged/ go; default storage_path/name")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (and always at the end)")
    num_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=-1, description="worker-group restarts from the latest checkpoint (-1 = forever)")
    collective_timeout_s: int = Field(
        300, ge=5, description="gloo/nccl timeout: a worker whose peer died fails after this instead of hanging"
    )
    export_merged: bool = Field(True, description="also write merged/ (LoRA folded into the weights)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("give train.warmup_steps or train.warmup_ratio, not both")
        if self.compile and self.gradient_checkpointing:
            # no test runs activation checkpointing inside a compiled graph: refuse rather than ship it untried
            raise ValueError("train.compile and train.gradient_checkpointing cannot be combined; set one to false")
        if self.backend == "local" and self.num_workers != 1:
            raise ValueError("backend 'local' runs one process: set num_workers: 1 (or backend: ray)")
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_workers ({self.num_workers}): "
                "every worker embeds an equal share of the contrastive batch"
            )
        return self

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers
