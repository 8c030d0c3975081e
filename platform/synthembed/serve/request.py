"""Read an HTTP request body into a checked JSON object, bounded in bytes, time, depth and number size.

Every way a body can be malformed ends in an `APIError` (4xx, OpenAI's error shape), never in an
exception the framework turns into a plain-text 500:

- headers over `MAX_HEADER_BYTES` in all are refused (431): Serve's proxy accepts 128 KB lines;
- `Content-Type` must be JSON (415): a page on another origin can POST `text/plain` without a CORS
  preflight, never `application/json`;
- the body is read as a stream with a running byte count (413 as soon as the cap is passed, before the
  rest is read, chunked or not) and a deadline for the whole body (408: a slow sender holds a replica
  slot for at most `limits.body_timeout_s`);
- JSON is parsed with integers of at most 20 digits, no NaN/Infinity, and a bounded nesting depth (Python's
  parser would otherwise spend seconds on a 5,000-digit integer or raise RecursionError);
- every string (keys included) must be valid Unicode: a lone UTF-16 surrogate (`"\\ud800"`) passes
  `json.loads` but breaks the tokenizer and the response encoder.

Hand-written because neither Starlette nor FastAPI bounds a body read in time, or JSON in depth.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from synthembed.serve.errors import APIError, bad_request

MAX_INT_DIGITS = 20
MAX_HEADER_BYTES = 16384  # what nginx and uvicorn's defaults accept per request head, roughly


def check_headers(headers) -> None:
    size = sum(len(k) + len(v) + 4 for k, v in headers.items())
    if size > MAX_HEADER_BYTES:
        raise APIError(431, f"request headers are {size} bytes; at most {MAX_HEADER_BYTES} are accepted", None,
                       "headers_too_large")
JSON_TYPES = ("application/json", "application/x-ndjson")


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not (media.startswith("application/") and media.endswith("+json")):
        raise APIError(415, f"Content-Type must be application/json, got {media or 'none'!r}", None,
                       "unsupported_media_type")


async def read_body(request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 once past `max_bytes` and with 408 after `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body is {declared} bytes; the limit is {max_bytes}", None, "body_too_large")
    chunks, size = [], 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise APIError(413, f"request body is over {max_bytes} bytes (the limit); send fewer or "
                               "shorter inputs per request", None, "body_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s", None,
                       "request_timeout") from None
    return b"".join(chunks)


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number has {len(text)} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes, max_depth: int) -> Any:
    depth, deepest, in_string, escaped = 0, 0, False, False
    for byte in body:  # the nesting depth, before the recursive parser sees it
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash: the next byte is escaped
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise bad_request(f"body is nested more than {max_depth} levels deep", None, "invalid_json")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    try:  # UTF-8 only (RFC 8259 8.1): json.loads would guess UTF-16/32 from the first bytes
        data = json.loads(body.decode("utf-8"), parse_int=_int, parse_constant=_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise bad_request(f"body is not valid JSON: {err}", None, "invalid_json") from None
    check_strings(data)
    return data


def check_strings(value: Any, where: str = "") -> None:
    """Every string must encode as UTF-8 (no lone surrogates); the error names the field."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise bad_request(f"{where or 'body'} is not valid Unicode (a lone surrogate at character {err.start})",
                              where or None, "invalid_unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(key, where or "body")
            check_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_strings(item, f"{where}[{i}]")
