"""Token-budget batching and the post-processing of pooled vectors.

A forward pass costs (items x longest item) tokens once padded (`synthembed.model.batches.padded_tokens`):
`@serve.batch(max_batch_size=max_batch_tokens, batch_size_fn=padded_tokens)` closes a batch before the
padded size would pass the budget. A client's large list is submitted item by item, so it is split over
as many batches as the budget needs and shares them with other clients' items.
"""

from __future__ import annotations

import base64

import numpy as np


def postprocess(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka cut then L2 normalisation: e = v[:d] / ||v[:d]|| (the cut is re-normalised, as in TEI)."""
    out = np.asarray(vectors, dtype=np.float32)
    if dimensions is not None:
        out = out[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out.astype(np.float32, copy=False)


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")
