"""The request body of `POST /v1/embeddings` (OpenAI's contract plus two extensions).

`input` is checked by `synthembed.serve.limits.parse_input` rather than by a pydantic union, so an error can
name the exact item (`input[3]`) instead of listing four union branches.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingRequest(BaseModel):
    # Unknown fields are errors: a typo such as `dimension` must not be ignored silently.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input: Any = Field(..., description="string | list of strings | list of token ids | list of token-id lists")
    model: str | None = Field(None, description="must equal the served model's name when given")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, strict=True, ge=1, description="keep the first n dims, then re-normalise")
    user: str | None = None
    # Extensions (e5-mistral): queries carry an instruction, documents are embedded raw.
    input_type: Literal["query", "document"] | None = None
    instruction: str | None = Field(None, max_length=2000)
