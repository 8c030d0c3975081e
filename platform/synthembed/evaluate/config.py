"""Typed config of the evaluation stage (the `evaluate:` section of configs/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthembed.config import StrictModel
from synthembed.evaluate.local_tasks import LAYOUTS
from synthembed.model import ModelConfig


class EvalModelConfig(ModelConfig):
    """The model to score: any `ModelConfig` source (plus adapter), or a sentence-transformers folder."""

    kind: Literal["auto", "decoder", "sentence-transformers"] = Field(
        "auto", description="auto: sentence-transformers when the folder has modules.json, else decoder"
    )
    name: str | None = Field(None, description="label of this run in reports (default: the source)")


class EvalTask(StrictModel):
    """One task: an mteb task by name (data from the hub) or a local folder in a known layout."""

    name: str | None = Field(None, description="mteb task name; with `path`, defaults to the layout's task")
    path: str | None = Field(None, description="local task folder; without it the task's data comes from the hub")
    layout: Literal["auto", *LAYOUTS] = "auto"
    subsets: list[str] | None = Field(None, description="languages / language pairs to keep (e.g. [de, fr] or [deu-eng])")
    limit: int | None = Field(None, ge=1, description="first N pairs / queries / test rows only (local folders)")
    corpus_limit: int | None = Field(None, ge=1, description="retrieval: at most N documents (judged ones always kept)")
    train_limit: int | None = Field(None, ge=1, description="classification: first N training rows")
    instruction: str | None = Field(None, description="override the task's instruction (default: mteb's table)")

    @model_validator(mode="after")
    def _name_or_path(self):
        if not self.name and not self.path:
            raise ValueError("a task needs `name` (an mteb task from the hub) or `path` (a local task folder)")
        if self.path is None and (self.limit or self.corpus_limit or self.train_limit):
            raise ValueError("limit/corpus_limit/train_limit apply to local folders (`path`) only")
        return self


class RayEncodeConfig(StrictModel):
    """Encode large text sets on Ray Data actors instead of in the driver process."""

    enabled: bool = True
    address: str | None = Field(None, description="Ray address; None joins RAY_ADDRESS or starts a local instance")
    num_workers: int = Field(2, ge=1, description="encoder actors, each with its own model copy")
    cpus_per_worker: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=1, description="texts per Ray batch (the model batches within it)")
    min_texts: int = Field(2000, ge=0, description="encode calls with fewer uncached texts stay in-process")


class EvaluateConfig(StrictModel):
    model: EvalModelConfig = Field(default_factory=EvalModelConfig)
    tasks: list[EvalTask] = Field(default_factory=list)
    output_dir: str = Field("runs/eval", description="results, report.md, chart.png and manifest.json go here")
    classification_protocols: list[Literal["mteb", "paper"]] = Field(
        default_factory=lambda: ["mteb", "paper"],
        description="mteb: L2-normalised inputs to the classifier; paper: no normalisation (decoder models only)",
    )
    cache: bool = Field(True, description="embedding cache keyed by model fingerprint and input text")
    cache_path: str | None = Field(None, description="default: $SYNTHEMBED_CACHE/embeddings.sqlite")
    ray: RayEncodeConfig = Field(default_factory=RayEncodeConfig)
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads for in-process encoding (None: every core this process may use; "
        "a Ray job's driver would otherwise inherit OMP_NUM_THREADS=1)")
    reference_scores: str | None = Field(None, description="REFERENCE_SCORES.md to compare against")
    reference_models: list[str] | None = Field(None, description="columns of the reference file to show (default all)")
    compare_with: list[str] = Field(default_factory=list, description="earlier run folders to put side by side")
    decontamination_report: str | None = Field(
        None, description="report.json of the decontamination pass the model's training data went through; "
        "shown beside the scores (the pipeline sets it for the fine-tuned model)")
    overwrite: bool = Field(False, description="re-run tasks whose result file already exists")
    show_progress: bool = False

    @model_validator(mode="after")
    def _has_tasks(self):
        if not self.tasks:
            raise ValueError("evaluate.tasks is empty; list at least one task (name: SciFact, or path: <folder>)")
        return self
