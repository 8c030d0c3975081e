"""The language pass: drop the rows the generator's language check flagged, before training.

`generate.language_check: flag` keeps every row and stores the check's verdict in `language_verdict`
(synth.language). This pass, on when `language_filter: true`, copies a generate folder's examples into
`<output_root>/language` without the rows whose verdict is `mismatched`; rows the detector could not
judge (`unknown`: too short, unsupported language, low confidence) and unchecked rows are kept. Flagging at
generation and filtering here, rather than rejecting at generation, keeps the expensive generated rows on
disk, so the same data can be trained with and without the filter (bench/quality_ablation.py).

    <out>/examples/part-00000.parquet   the kept rows (EXAMPLE_SCHEMA)
    <out>/removed.parquet               the dropped rows, with `reason` ("wrong_language: <detail>")
    <out>/report.json                   counts per asked language, a few dropped examples
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
from pydantic import Field

from synthembed import stage
from synthembed.config import ToggleModel
from synthembed.synth.language import mismatch_detail

log = logging.getLogger(__name__)

VERSION = 1
REASON = "wrong_language"


class LanguageFilterConfig(ToggleModel):
    """`language_filter:` of a pipeline profile; `language_filter: true` (or false) sets `enabled` alone."""

    enabled: bool = Field(False, description="drop rows whose language_verdict is mismatched (generate.language_check: flag)")
    examples: int = Field(5, ge=0, description="dropped rows quoted in the report")


def mismatched(verdict_json: str | None) -> bool:
    return bool(verdict_json) and json.loads(verdict_json)["verdict"] == "mismatched"


def stage_folder(source: str | Path, out: str | Path, config: LanguageFilterConfig) -> stage.StageFolder:
    return stage.StageFolder(out, "language", stage.fingerprint(stage.input_fingerprint(source), VERSION))


def run(source: str | Path, out: str | Path, config: LanguageFilterConfig) -> Path:
    """Write the examples of folder `source` whose language matched (or could not be judged) into `out`."""
    from synthembed.synth.ledger import read_dir, write_atomic
    from synthembed.synth.schema import EXAMPLE_SCHEMA

    folder = stage_folder(source, out, config)
    if folder.complete():
        return folder.path
    folder.begin(json.dumps({"source": str(source), "language_filter": config.model_dump()}, indent=2) + "\n")
    rows = read_dir(Path(source) / "examples", EXAMPLE_SCHEMA).to_pylist()
    kept, dropped = [], []
    for r in rows:
        if mismatched(r["language_verdict"]):
            dropped.append({**r, "reason": f"{REASON}: {mismatch_detail(json.loads(r['language_verdict'])['fields'])}"})
        else:
            kept.append(r)
    unchecked = sum(1 for r in rows if not r["language_verdict"])
    write_atomic(pa.Table.from_pylist(kept, schema=EXAMPLE_SCHEMA), folder.path / "examples" / "part-00000.parquet")
    write_atomic(pa.Table.from_pylist(dropped, schema=pa.schema([*EXAMPLE_SCHEMA, pa.field("reason", pa.string())])),
                 folder.path / "removed.parquet")
    report = {
        "examples_in": len(rows), "examples_kept": len(kept), "removed": len(dropped), "unchecked": unchecked,
        "removed_by_language": dict(Counter(r["language"] for r in dropped).most_common()),
        "examples": [{"language": r["language"], "task_type": r["task_type"], "query": r["query"][:160],
                      "reason": r["reason"][:200]} for r in dropped[:config.examples]],
    }
    if unchecked == len(rows) and rows:
        report["note"] = "no row carries a language verdict: generate with language_check: flag for this pass to act"
    stage.write_json(folder.path / "report.json", report)
    folder.finish(report)
    log.info("language: removed %d of %d rows in another language than asked", len(dropped), len(rows))
    return folder.path
