"""Generator engines, all behind ray.data.llm processors.

- `openai` and `embedded` use `HttpRequestProcessorConfig`: one code path for GPT-4, a `vllm serve`
  endpoint, or the llama.cpp server that `EmbeddedServer` starts on 127.0.0.1. Retries with exponential
  backoff (`max_retries`, `retry_base_s`) and a request-rate cap (`qps`) are the processor's own.
- `vllm` uses `vLLMEngineProcessorConfig` with JSON-schema guided decoding (`structured_outputs`).

Rows entering a processor carry `request_id`, `messages` and `schema` (both JSON strings, so Arrow never
has to merge differently shaped nested columns), `seed` and `engine_index`. Every processor's
postprocess returns the same flat columns (`OUTPUT_COLUMNS`): the text, finish reason, token counts and
an error string, so parsing and validation downstream do not care which engine ran.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from synthembed.synth.config import EngineConfig

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("request_id", "engine_index", "text", "finish_reason", "tokens_in", "tokens_out", "error")


# ---------------------------------------------------------------------------------------------- payloads
def response_format(kind: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `response_format` field for an OpenAI-style chat request.

    llama.cpp's server rejects OpenAI's `json_schema` form and takes `{"type": "json_object", "schema": ...}`
    instead; OpenAI and vLLM servers take `json_schema`.
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
    rf = response_format(engine.resolved_response_format(), schema)
    if rf is not None:
        payload["response_format"] = rf
    return payload


def parse_chat_response(resp: Any) -> dict[str, Any]:
    """Text, finish reason and usage from an OpenAI chat-completions response (or its error body)."""
    out = {"text": "", "finish_reason": "", "tokens_in": 0, "tokens_out": 0, "error": ""}
    if not isinstance(resp, dict):
        out["error"] = f"unexpected response: {str(resp)[:500]}"
        return out
    if "error" in resp or "detail" in resp:
        out["error"] = json.dumps(resp.get("error", resp.get("detail")), ensure_ascii=False)[:2000]
        return out
    try:
        choice = resp["choices"][0]
        out["text"] = choice["message"].get("content") or ""
        out["finish_reason"] = choice.get("finish_reason") or ""
    except (KeyError, IndexError, TypeError):
        out["error"] = f"no choices in response: {json.dumps(resp)[:500]}"
        return out
    usage = resp.get("usage") or {}
    out["tokens_in"] = int(usage.get("prompt_tokens") or 0)
    out["tokens_out"] = int(usage.get("completion_tokens") or 0)
    return out


# ----------------------------------------------------------------------------------------- processors
class _HttpPre:
    """Row -> {"payload": chat request}. A class, not a closure, so Ray pickles it cleanly."""

    def __init__(self, engine: EngineConfig, model_name: str):
        self.engine, self.model_name = engine, model_name

    def __call__(self, row: dict) -> dict:
        schema = json.loads(row["schema"]) if row.get("schema") else None
        # The payload crosses Ray Data as an Arrow column. As a nested value, the rows' differently shaped
        # JSON schemas become one merged struct type (keys a row lacks filled with null) or fail to
        # concatenate across blocks; as a JSON *string* it has one type. `_JsonBodySession` unwraps it.
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
    return {**carry(row), **parse_chat_response(row.get("http_response"))}


def _vllm_pre_factory(engine: EngineConfig):
    s = engine.sampling

    def pre(row: dict) -> dict:
        schema = json.loads(row["schema"]) if row.get("schema") else None
        params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                                  "seed": int(row["seed"])}
        if schema is not None:
            # A JSON string, not a dict: Arrow would merge the rows' different schemas (see _JsonBodySession).
            params["structured_outputs"] = {"json": json.dumps(schema)}
        return {"messages": json.loads(row["messages"]), "sampling_params": params}

    return pre


def _vllm_post(row: dict) -> dict:
    return {
        **carry(row),
        "text": row.get("generated_text") or "", "finish_reason": "",
        "tokens_in": int(row.get("num_input_tokens") or 0), "tokens_out": int(row.get("num_generated_tokens") or 0),
        "error": "",
    }


def _vllm_error_to_output(row: dict) -> dict:
    """should_continue_on_error rows bypass postprocess; bring them to OUTPUT_COLUMNS."""
    if not row.get("__inference_error__"):
        return {k: v for k, v in row.items() if k != "__inference_error__"}
    return {**carry(row), "text": "",
            "finish_reason": "", "tokens_in": 0, "tokens_out": 0,
            "error": str(row.get("__inference_error__") or "engine error")[:2000]}


def vllm_processor_config(engine: EngineConfig):
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs: dict[str, Any] = dict(
        model_source=engine.model, engine_kwargs=dict(engine.engine_kwargs), batch_size=engine.batch_size,
        concurrency=engine.concurrency, should_continue_on_error=True,
    )
    if engine.accelerator_type:
        kwargs["accelerator_type"] = engine.accelerator_type
    if engine.placement_group:
        kwargs["placement_group_config"] = engine.placement_group
    return vLLMEngineProcessorConfig(**kwargs)


def drop_nulls(obj: Any) -> Any:
    """Remove None values from nested dicts/lists (our payloads never hold a meaningful null)."""
    if isinstance(obj, dict):
        return {k: drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [drop_nulls(v) for v in obj]
    return obj


class _JsonBodySession:
    """aiohttp session for ray.data.llm's HTTP stage that sends each row's own JSON payload.

    The preprocess stores the payload as a JSON string (see `_HttpPre`), which the stage serialises once more
    into a JSON string literal; here the body is decoded back to the object before sending. Nulls are dropped
    as a second guard against Arrow's struct merging (our payloads never hold a meaningful null).
    Regression tests: tests/test_synth_integration.py::test_http_stage_sends_each_rows_own_schema.
    """

    def __init__(self):
        import aiohttp

        # One slow local engine serves every in-flight request in turn: allow long queues, not aiohttp's 5 min.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800, sock_connect=30))

    async def __aenter__(self):
        await self._session.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._session.__aexit__(*exc)

    def post(self, url, data=None, **kwargs):
        if isinstance(data, str):
            body = json.loads(data)
            if isinstance(body, str):
                body = json.loads(body)
            data = json.dumps(drop_nulls(body), ensure_ascii=False)
        return self._session.post(url, data=data, **kwargs)


def http_processor_config(engine: EngineConfig, url: str, api_key: str | None):
    from ray.data.llm import HttpRequestProcessorConfig

    # The key travels in the processor's constructor arguments (memory only), never in a runtime_env.
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return HttpRequestProcessorConfig(
        url=url, headers=headers, qps=engine.qps, max_retries=engine.max_retries,
        base_retry_wait_time_in_s=engine.retry_base_s, batch_size=engine.batch_size, concurrency=engine.concurrency,
        session_factory=_JsonBodySession,
    )


def apply_engine(ds, engine: EngineConfig, endpoint: str | None, model_name: str | None):
    """Run `ds` (request rows) through the engine; return a dataset of OUTPUT_COLUMNS rows."""
    from ray.data.llm import build_processor

    if engine.kind == "vllm":
        proc = build_processor(vllm_processor_config(engine), preprocess=_vllm_pre_factory(engine),
                               postprocess=_vllm_post)
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


# ------------------------------------------------------------------------------------ embedded server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it if the job process dies
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def gguf_for(model: str) -> Path:
    from synthembed.model.loading import PACKAGED_MODELS, packaged_gguf_path

    if model in PACKAGED_MODELS:
        return packaged_gguf_path(model)
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise FileNotFoundError(
            f"generate engine kind=embedded: model must be a packaged preset ({', '.join(PACKAGED_MODELS)}) "
            f"or an existing .gguf file, got {model!r}"
        )
    return path


class EmbeddedServer:
    """llama.cpp's OpenAI-compatible server for one GGUF, on a free 127.0.0.1 port, for the life of a job.

    >>> with EmbeddedServer(engine_cfg) as srv: srv.base_url   # "http://127.0.0.1:PORT/v1"
    """

    def __init__(self, engine: EngineConfig, log_path: Path | None = None, startup_timeout_s: float = 120):
        self.engine = engine
        self.alias = Path(engine.model).stem if engine.model.endswith(".gguf") else engine.model
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "EmbeddedServer":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "generate engine kind=embedded needs llama-cpp-python[server]: run scripts/setup.sh "
                "(or pip install 'llama-cpp-python[server]')"
            ) from None
        gguf = gguf_for(self.engine.model)
        self.port = _free_port()
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.engine.n_ctx),
            "--n_threads", str(self.engine.n_threads or os.cpu_count() or 1),
        ]
        if self.engine.chat_format:
            cmd += ["--chat_format", self.engine.chat_format]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        log.info("starting embedded engine %s on 127.0.0.1:%d", self.engine.label, self.port)
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded engine {self.engine.label} exited with code {self.proc.returncode} "
                                   f"during startup (log: {self.log_path})")
            try:
                urllib.request.urlopen(self.base_url + "/models", timeout=2).read()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"embedded engine {self.engine.label} did not answer within {self.startup_timeout_s}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def post_chat(base_url: str, payload: dict, api_key: str | None = None, timeout: float = 600) -> dict:
    """One direct chat-completions call without Ray (the benchmark's "engine called directly" side)."""
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            return json.loads(err.read())
        except ValueError:
            return {"error": f"HTTP {err.code}"}
