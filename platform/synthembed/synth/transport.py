"""The HTTP client under ray.data.llm's HTTP stage: every request ends as exactly one settled response.

Ray's `HttpRequestUDF` raises (and so aborts the whole dataset) when a row exhausts its retries, when a
body is not JSON, or when a connection is refused; and it stores each response as a nested Arrow value,
so two rows whose bodies differ in shape (a `content` string in one, a list in the other) cannot share a
block. ray.data.llm offers no per-row error mode for HTTP (only the vLLM processor has
`should_continue_on_error`), so this session, given to the stage as its `session_factory`, does the
sending itself:

- retries with exponential backoff on connection errors, timeouts and retryable statuses (429, 408, 5xx),
  up to `max_retries` (Ray's own retries are set to 0);
- a per-request timeout (`request_timeout_s`) and a cap on the body size;
- starts each request as soon as the stage creates it (the stage awaits a batch's requests one by one, so
  lazily created requests would reach the server one at a time, leaving it idle between them);
- always hands Ray a 200 whose JSON is `{"status", "body", "error_kind", "error"}` with the raw body as a
  *string*: one Arrow type for every row, whatever the server sent.

`settle_chat` then turns that record into the flat engine-output columns, never raising: a malformed
response becomes an `error` (with an `error_kind`), which validation turns into a reject naming it.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BODY_BYTES = 8 << 20  # a chat completion is a few KB; anything this big is not one

# error_kind values: the rows' failure classes, in the order a request meets them.
CONNECTION = "connection"  # refused, reset or closed: for an engine the job owns, the process is down
TIMEOUT = "timeout"
HTTP = "http"              # a non-2xx status (after retries for the retryable ones)
BAD_RESPONSE = "bad_response"  # 2xx, but not an OpenAI chat completion we can read


def loads_bounded(text: str | bytes) -> Any:
    """json.loads that raises ValueError (never RecursionError) for hostile input.

    Python's decoder raises RecursionError for arrays nested a few thousand deep and ValueError for
    integers of more than 4,300 digits; both are one bad row, not a crash.
    """
    try:
        return json.loads(text, strict=False)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def drop_nulls(obj: Any) -> Any:
    """Remove None values from nested dicts/lists (our payloads never hold a meaningful null)."""
    if isinstance(obj, dict):
        return {k: drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [drop_nulls(v) for v in obj]
    return obj


class _Settled:
    """What Ray's stage awaits and reads: status 200 and our fixed-shape record as its JSON."""

    status = 200
    reason = "OK"

    def __init__(self, record: dict[str, Any]):
        self._record = record

    async def json(self, *args, **kwargs) -> dict[str, Any]:
        return self._record

    async def __aenter__(self) -> "_Settled":
        return self

    async def __aexit__(self, *exc) -> None:
        return None


class _Pending:
    """A request already on its way; awaiting it gives its `_Settled` response."""

    def __init__(self, task: "asyncio.Task[_Settled]"):
        self.task = task

    def __await__(self):
        return self.task.__await__()


def _record(status: int, body: str, kind: str = "", error: str = "") -> dict[str, Any]:
    return {"status": status, "body": body, "error_kind": kind, "error": error}


class GuardedSession:
    """aiohttp session for ray.data.llm's HTTP stage (see the module docstring).

    The preprocess stores each payload as a JSON string (so Arrow never merges the rows' differently shaped
    JSON schemas); the stage serialises it once more, and `post` decodes it back before sending.
    Regression test: tests/test_synth_integration.py::test_http_stage_sends_each_rows_own_schema.
    """

    def __init__(self, max_retries: int = 3, retry_base_s: float = 1.0, request_timeout_s: float = 600):
        import aiohttp

        self.max_retries, self.retry_base_s, self.request_timeout_s = max_retries, retry_base_s, request_timeout_s
        # One slow local engine serves every in-flight request in turn: the per-request timeout decides.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))

    async def __aenter__(self) -> "GuardedSession":
        await self._session.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._session.__aexit__(*exc)

    def post(self, url: str, data: Any = None, headers: dict | None = None, **kwargs):
        if isinstance(data, str):
            body = json.loads(data)
            if isinstance(body, str):
                body = json.loads(body)
            data = json.dumps(drop_nulls(body), ensure_ascii=False)
        return _Pending(asyncio.ensure_future(self._send(url, data, headers or {})))

    async def _send(self, url: str, data: Any, headers: dict) -> _Settled:
        import aiohttp

        last: dict[str, Any] = {}
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_base_s * 2 ** (attempt - 1))
            try:
                timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
                async with self._session.post(url, data=data, headers=headers, timeout=timeout) as resp:
                    raw = await resp.content.read(MAX_BODY_BYTES + 1)
                    status, ctype = resp.status, resp.headers.get("Content-Type", "")
            except asyncio.TimeoutError:
                last = _record(0, "", TIMEOUT, f"no complete answer within request_timeout_s={self.request_timeout_s:g}")
                continue
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
                last = _record(0, "", CONNECTION, f"{type(err).__name__}: {err}"[:300])
                continue
            text = raw[:MAX_BODY_BYTES].decode("utf-8", errors="replace")
            if len(raw) > MAX_BODY_BYTES:
                return _Settled(_record(status, "", BAD_RESPONSE, f"body larger than {MAX_BODY_BYTES} bytes"))
            if 200 <= status < 300:
                return _Settled(_record(status, text))
            kind_of_body = "HTML error page" if "html" in ctype.lower() or text.lstrip()[:1] == "<" else ctype or "body"
            last = _record(status, text, HTTP, f"HTTP {status} ({kind_of_body}): {' '.join(text.split())[:200]}")
            if status not in RETRYABLE_STATUS:
                break
        tries = self.max_retries + 1
        if last.get("error_kind") != HTTP or last["status"] in RETRYABLE_STATUS:
            last["error"] += f" [after {tries} attempt{'s' if tries > 1 else ''}]"
        return _Settled(last)


def _count(usage: dict, key: str) -> int:
    value = usage.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"usage.{key} is {str(value)[:40]!r}, not a token count")
    return int(value)


def settle_chat(record: Any) -> dict[str, Any]:
    """Flat engine-output columns from one settled record; never raises.

    Returns {text, finish_reason, tokens_in, tokens_out, error_kind, error}; `error` is empty when the
    response is a readable chat completion.
    """
    out: dict[str, Any] = {"text": "", "finish_reason": "", "tokens_in": 0, "tokens_out": 0, "error_kind": "",
                           "error": ""}
    if not isinstance(record, dict) or "error_kind" not in record:
        return {**out, "error_kind": BAD_RESPONSE, "error": f"unexpected response record: {str(record)[:300]}"}
    if record["error_kind"]:
        return {**out, "error_kind": record["error_kind"], "error": str(record["error"])[:2000]}
    try:
        resp = loads_bounded(record["body"])
    except ValueError as err:
        return {**out, "error_kind": BAD_RESPONSE,
                "error": f"HTTP {record['status']} body is not JSON ({err}): {' '.join(record['body'].split())[:200]}"}
    try:
        if not isinstance(resp, dict):
            raise ValueError(f"body is a JSON {type(resp).__name__}, not an object")
        if "error" in resp:
            raise ValueError(f"error body: {json.dumps(resp['error'], ensure_ascii=False)[:500]}")
        choice = resp["choices"][0]
        content = choice["message"]["content"]
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"message.content is a {type(content).__name__}, expected a string")
        finish = choice.get("finish_reason") or ""
        if not isinstance(finish, str):
            raise ValueError(f"finish_reason is a {type(finish).__name__}, expected a string")
        usage = resp.get("usage") or {}
        if not isinstance(usage, dict):
            raise ValueError(f"usage is a {type(usage).__name__}, expected an object")
        tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    except (KeyError, IndexError, TypeError) as err:
        return {**out, "error_kind": BAD_RESPONSE,
                "error": f"not a chat completion (missing {err}): {record['body'][:300]}"}
    except (ValueError, OverflowError) as err:
        return {**out, "error_kind": BAD_RESPONSE, "error": str(err)[:2000]}
    return {**out, "text": content, "finish_reason": finish, "tokens_in": tokens[0], "tokens_out": tokens[1]}
