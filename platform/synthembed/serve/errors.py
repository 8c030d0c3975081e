"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with a 4xx status.

Every refusal names the offending field in `param` (e.g. `input[3]`, `dimensions`) and says how to fix it.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class APIError(Exception):
    """A request the server refuses; `status` is the HTTP code, `param` the field at fault."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error", headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def loc_to_param(loc: tuple) -> str | None:
    """pydantic error location ('body', 'dimensions') / ('input', 3) -> 'dimensions' / 'input[3]'."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (isinstance(part, str) and ("[" in part or part.startswith("function-"))):
            out += ("." if out else "") + str(part)
    return out or None


STATUS_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}
