"""The Ray Serve embedding service: a FastAPI ingress deployment with token-budget dynamic batching.

(No `from __future__ import annotations` here: FastAPI must see the route methods' real `Request` type.)

Routes (all behind the optional API key):
  POST /v1/embeddings   OpenAI-compatible, plus `input_type` (query|document) and `instruction`
  GET  /v1/models       the one served model
  GET  /health          200 once the model is loaded (a replica only starts answering after loading)

Request path inside a replica: read body (size cap) -> validate (OpenAI error shape on failure) ->
tokenize with `Embedder.tokenize` (cap, truncate|reject) -> each input goes to the replica's
`IdleBatcher`, whose batches are formed when the model is free and closed by a padded-token budget -> cut to `dimensions`,
re-normalise -> float or base64. Overload is refused by Serve itself before the request reaches a
replica: `max_queued_requests` + `BackpressureConfig` answer 429 (or 503) with `Retry-After`.
"""


import asyncio
import hashlib
import hmac
import logging
import os
import threading
import time
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from synthembed.config import load_config
from synthembed.model import Embedder
from synthembed.serve.batching import IdleBatcher, postprocess, to_base64
from synthembed.serve.config import ServeConfig
from synthembed.serve.errors import STATUS_TYPES, APIError, bad_request, loc_to_param
from synthembed.serve.limits import parse_input, prepare_token_ids, resolve_instruction, tokenize_texts
from synthembed.serve.metrics import ServeMetrics
from synthembed.serve.request import check_content_type, check_headers, parse_json, read_body
from synthembed.serve.schemas import EmbeddingRequest

log = logging.getLogger("synthembed.serve")

api = FastAPI(title="synthembed embeddings", version="1")

# Environment passed to replicas: where converted models are cached and whether the hub may be used.
# Only non-secret settings: runtime_env is visible in the dashboard, so API keys never go there.
FORWARDED_ENV = ("SYNTHEMBED_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_hashes(env_var: str) -> list[str]:
    """sha256 of each comma-separated key in `env_var`; replicas receive hashes only, never the keys."""
    raw = os.environ.get(env_var, "")
    return [hash_key(k.strip()) for k in raw.split(",") if k.strip()]


# ------------------------------------------------------------------------------------------ HTTP layer
@api.middleware("http")
async def _authenticate(request: Request, call_next):
    """Every route (health, docs and unknown paths included) needs the key when one is configured."""
    # Middleware runs outside the class's routes, so it finds the replica's instance through Serve's
    # replica context (Serve pickles the class by value: a module global set in __init__ lands in a copy).
    svc = serve.get_replica_context().servable_object
    try:
        check_headers(request.headers)
    except APIError as err:
        svc.metrics.request(err.status)
        return err.response()
    if svc.key_hashes:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = hash_key(token.strip()) if scheme.lower() == "bearer" and token.strip() else ""
        # compare_digest on every stored hash: time does not depend on which key (if any) matched.
        ok = False
        for stored in svc.key_hashes:
            ok |= hmac.compare_digest(given, stored)
        if not ok:
            svc.metrics.request(401)
            msg = "missing API key: send 'Authorization: Bearer <key>'" if not given else "invalid API key"
            return APIError(401, msg, code="invalid_api_key", type="authentication_error",
                            headers={"WWW-Authenticate": "Bearer"}).response()
    elif not host_allowed(request.headers.get("host"), svc.config.auth.allowed_hosts):
        # No key: only the configured host names (a DNS-rebinding page sends its own domain as Host).
        svc.metrics.request(400)
        return bad_request(f"Host {request.headers.get('host', '')[:100]!r} is not served here; allowed: "
                           f"{svc.config.auth.allowed_hosts} (serve.auth.allowed_hosts)", None, "invalid_host").response()
    return await call_next(request)


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    if "*" in allowed:
        return True
    name = (host or "").strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:  # 127.0.0.1:8000
        name = name.split(":")[0]
    return name in [a.lower() for a in allowed]


@api.exception_handler(APIError)
async def _api_error(_: Request, exc: APIError):
    return exc.response()


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError):
    return _from_pydantic(exc.errors()).response()


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException):
    # exc.headers carries e.g. the `Allow` of a 405
    err = APIError(exc.status_code, str(exc.detail), type=STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                   headers=dict(exc.headers or {}))
    return err.response()


def _from_pydantic(errors: list[dict]) -> APIError:
    first = errors[0]
    param = loc_to_param(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        allowed = ", ".join(sorted(EmbeddingRequest.model_fields))
        return bad_request(f"unknown field '{param}'; allowed fields: {allowed}", param, "unknown_field")
    got = first.get("input")
    got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r:.60})"
    return bad_request(f"{param}: {first['msg']}{got_s}", param)


# ------------------------------------------------------------------------------------------ deployment
def load_encoder(config: ServeConfig):
    """The replica's model: `Embedder` (torch) or `VllmEncoder` (vLLM's engine); both take our token ids.

    Defined above the deployment class: Serve ships that class by value, and a helper defined after it was
    missing in the replica (NameError)."""
    if config.backend == "vllm":
        from synthembed.model.vllm_encoder import VllmEncoder

        for name, value in config.vllm.env.items():
            os.environ.setdefault(name, value)
        return VllmEncoder(config.model, config.vllm.engine_kwargs)
    return Embedder.load(config.model)


@serve.deployment(name="EmbeddingService")
@serve.ingress(api)
class EmbeddingService:
    """One replica: the model, the guard rails and the batcher."""

    def __init__(self, config: dict, key_hashes: list[str] | None = None):
        self.config = ServeConfig.model_validate(config)
        if self.config.deployment.torch_threads:
            torch.set_num_threads(self.config.deployment.torch_threads)
        self.embedder = load_encoder(self.config)
        self.model_name = self.config.model_name
        self.cap = self.config.max_tokens_per_item
        self.vocab_size = self.embedder.vocab_size
        self.key_hashes = list(key_hashes or [])
        self._tokenizer_lock = threading.Lock()
        self.metrics = ServeMetrics(self.model_name)
        self.batcher = IdleBatcher(self.embedder.embed_ids, self.config.batching.max_batch_tokens,
                                   self.config.batching.batch_wait_timeout_s, self._observe_batch)
        log.info("serving %s (dim %d, cap %d tokens, torch threads %d, api key %s)", self.model_name,
                 self.embedder.dim, self.cap, torch.get_num_threads(), "on" if self.key_hashes else "off")

    # ---------------------------------------------------------------------------------------- routes
    @api.get("/health")
    async def health(self):
        return {"status": "ok", "model": self.model_name, "dim": self.embedder.dim, "max_tokens": self.cap}

    @api.get("/v1/models")
    async def models(self):
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "synthembed"}]}

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        try:
            # Our own deadline: Serve's proxy lets a client lift its timeout with a request header.
            payload = await asyncio.wait_for(self._embeddings(request), self.config.request_timeout_s)
        except APIError as err:
            self.metrics.request(err.status, time.perf_counter() - start)
            return err.response()
        except asyncio.TimeoutError:
            self.metrics.request(504, time.perf_counter() - start)
            return APIError(504, f"the request took longer than {self.config.request_timeout_s:g} s", None,
                            "timeout", type="server_error").response()
        except Exception:  # a bug, never the client's fault: logged, counted, answered in the API's shape
            log.exception("unexpected error while embedding a request")
            self.metrics.request(500, time.perf_counter() - start)
            return APIError(500, "internal error while embedding; it was logged", None, "internal_error",
                            type="server_error").response()
        self.metrics.request(200, time.perf_counter() - start)
        return JSONResponse(payload)

    async def _embeddings(self, request: Request) -> dict[str, Any]:
        return await self.embed_request(await self._read(request))

    async def _read(self, request: Request) -> EmbeddingRequest:
        limits = self.config.limits
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        data = parse_json(body, limits.max_json_depth)
        if not isinstance(data, dict):
            raise bad_request("body must be a JSON object with at least an 'input' field", None, "invalid_json")
        try:
            return EmbeddingRequest.model_validate(data)
        except ValidationError as err:
            raise _from_pydantic(err.errors()) from None

    async def embed_request(self, req: EmbeddingRequest) -> dict[str, Any]:
        limits = self.config.limits
        if req.model is not None and req.model != self.model_name:
            raise APIError(404, f"model '{req.model[:100]}' is not served here; use '{self.model_name}'", "model",
                           "model_not_found", type="not_found_error")
        if req.dimensions is not None and req.dimensions > self.embedder.dim:
            raise bad_request(f"dimensions must be between 1 and {self.embedder.dim} for this model, "
                              f"got {req.dimensions}", "dimensions")
        texts, token_ids = parse_input(req.input, limits.max_items_per_request)
        dims = req.dimensions or self.embedder.dim
        per_value = 20 if req.encoding_format == "float" else 16 / 3  # JSON float repr vs base64 of 4 bytes
        estimate = len(texts or token_ids) * (dims * per_value + 80)
        if estimate > limits.max_response_bytes:
            raise APIError(413, f"the answer would be ~{estimate / 1e6:.0f} MB (limit {limits.max_response_bytes / 1e6:.0f}"
                           " MB): send fewer inputs per request, ask for encoding_format 'base64' (4x smaller) "
                           "or fewer dimensions", "input", "response_too_large")
        if texts is not None:
            instruction = resolve_instruction(req.input_type, req.instruction, self.config.default_query_instruction)
            tok = await asyncio.to_thread(self._tokenize, texts, instruction)
        else:
            if not limits.accept_token_ids:
                raise bad_request("token-id input is off on this server (limits.accept_token_ids): ids from another "
                                  "tokenizer would be embedded as garbage; send text", "input", "token_ids_disabled")
            if req.instruction is not None or req.input_type == "query":
                raise bad_request("token-id input is embedded as given; format the query text yourself and "
                                  "omit instruction/input_type", "instruction")
            tok = prepare_token_ids(token_ids, self.vocab_size, self.embedder.eos_id, self.cap, limits.truncate)
        if tok.tokens > limits.max_tokens_per_request:
            raise bad_request(f"input has {tok.tokens} tokens in total; the limit is "
                              f"{limits.max_tokens_per_request} per request: split it", "input", "too_many_tokens")
        # Item by item into the batcher: a large list is spread over token-budget batches.
        vectors = await asyncio.gather(*(self.batcher.embed(ids) for ids in tok.ids))
        out = postprocess(np.stack(vectors), req.dimensions, self.config.model.normalize)
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            self.metrics.nonfinite.inc()
            raise APIError(500, f"the model produced a non-finite embedding for input[{bad}]; it was logged",
                           f"input[{bad}]", "nonfinite_embedding", type="server_error")
        self.metrics.inputs.inc(len(tok.ids))
        self.metrics.tokens.inc(tok.tokens)
        if tok.truncated:
            self.metrics.truncated.inc(tok.truncated)
        encode = to_base64 if req.encoding_format == "base64" else (lambda v: v.tolist())
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(out)],
            "model": self.model_name,
            "usage": {"prompt_tokens": tok.tokens, "total_tokens": tok.tokens},
        }

    def _tokenize(self, texts: list[str], instruction: str | None):
        # A fast tokenizer is not safe to call from two threads when the truncation length changes
        # between calls ("Already borrowed"); tokenizing is cheap next to the forward pass, so serialise it.
        with self._tokenizer_lock:
            return tokenize_texts(self.embedder, texts, instruction, self.cap, self.config.limits.truncate)

    def _observe_batch(self, items: int, tokens: int, seconds: float, queued: int) -> None:
        self.metrics.forward_s.observe(seconds)
        self.metrics.queued.set(queued)
        self.metrics.batch_items.observe(items)
        self.metrics.batch_tokens.observe(tokens)


# ------------------------------------------------------------------------------------------ building
def deployment_options(config: ServeConfig) -> dict[str, Any]:
    from ray.serve.config import BackpressureConfig

    dep = config.deployment
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
    if config.backend == "vllm" and config.vllm.python:
        runtime_env["py_executable"] = config.vllm.python
    opts: dict[str, Any] = {
        "max_ongoing_requests": dep.max_ongoing_requests,
        "max_queued_requests": dep.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=dep.overload_status, retry_after_s=dep.retry_after_s),
        "ray_actor_options": {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus,
                              **({"runtime_env": runtime_env} if runtime_env else {})},
    }
    if dep.autoscaling:  # Serve refuses a fixed num_replicas next to an autoscaling_config
        opts["autoscaling_config"] = dep.autoscaling
    else:
        opts["num_replicas"] = dep.num_replicas or 1
    return opts


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_exposure(config: ServeConfig, key_hashes: list[str]) -> None:
    """Fail closed: a service reachable from the network needs an API key, unless anonymity is explicit."""
    if config.host not in LOOPBACK_HOSTS and not key_hashes and not config.auth.allow_anonymous:
        raise ValueError(
            f"serve.host is {config.host} (reachable from the network) but ${config.api_key_env} is not set where "
            f"the app is built: export {config.api_key_env}=<key> (or a comma-separated list), or set "
            "serve.auth.allow_anonymous: true to serve everyone on purpose")


def build_app(config: ServeConfig, key_hashes: list[str] | None = None):
    """The bound Serve application; API keys are read (and hashed) here, from `config.api_key_env`."""
    hashes = api_key_hashes(config.api_key_env) if key_hashes is None else key_hashes
    check_exposure(config, hashes)
    return EmbeddingService.options(**deployment_options(config)).bind(config.model_dump(mode="json"), hashes)


def app_builder(args: dict[str, Any]):
    """Entry for `serve run` / `serve deploy` config files.

    `args` is either `{config: configs/cpu-tiny.yaml, overrides: ["serve.model.source=..."]}` (the `serve:`
    section of a profile) or the serve section itself inline (`{model: {source: ...}, limits: ...}`).
    """
    args = dict(args or {})
    path, overrides = args.pop("config", None), args.pop("overrides", None)
    if path is not None:
        if args:
            raise ValueError(f"app args: give either 'config' (+ 'overrides') or inline settings, not both: {sorted(args)}")
        config = load_config(ServeConfig, path, overrides, section="serve")
    else:
        config = ServeConfig.model_validate(args)
    return build_app(config)


def deploy(config: ServeConfig) -> str:
    """Deploy (or update) the service on the connected Ray cluster and return its base URL.

    Connects to the running cluster (`ray.init(address="auto")`) when this process is not connected yet.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False)
    # The proxy's own timeout a little above ours, so the replica answers first, in the API's shape.
    serve.start(http_options={"host": config.host, "port": config.port,
                              "request_timeout_s": config.request_timeout_s + 5, "keep_alive_timeout_s": 5})
    # serve.run returns once every replica has loaded the model and passed its health check.
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=False)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}"


def shutdown(app_name: str) -> None:
    serve.delete(app_name)
