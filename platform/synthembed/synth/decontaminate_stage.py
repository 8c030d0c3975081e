"""The decontamination pass between generation and training: a generate folder in, a clean folder out.

    <out>/
      stage.json, config.yaml   the stage contract (synthembed.stage)
      examples/*.parquet        the kept rows, EXAMPLE_SCHEMA: what training reads (train/data.source_files
                                takes a folder's examples/, so the trainer needs no change)
      removed.parquet           the removed rows with `reason` ("contaminated: ..."), the field, the rule,
                                and the evaluation task and text they overlap
      report.json               counts (per task, per rule), a few removed examples, notes on skipped tasks
      manifest.json             last; holds the report too

Its fingerprint covers the generate folder's manifest, the evaluation tasks (their settings and files) and
the rule settings, so new data, another task list or other rules run it again, and training after it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa

from synthembed import stage
from synthembed.evaluate.config import EvalTask
from synthembed.evaluate.texts import task_texts
from synthembed.synth.decontaminate import DecontaminateConfig, EvalIndex, filter_rows
from synthembed.synth.ledger import read_dir, write_atomic
from synthembed.synth.schema import EXAMPLE_COLUMNS, EXAMPLE_SCHEMA

log = logging.getLogger(__name__)

VERSION = 1  # of the rules' implementation: a change re-runs the pass
REMOVED_SCHEMA = pa.schema([*EXAMPLE_SCHEMA, pa.field("reason", pa.string()), pa.field("field", pa.string()),
                            pa.field("rule", pa.string()), pa.field("eval_task", pa.string()),
                            pa.field("eval_text", pa.string())])


def stage_folder(generated: str | Path, out: str | Path, tasks: list[EvalTask],
                 config: DecontaminateConfig) -> stage.StageFolder:
    task_ids = [{**t.model_dump(mode="json"), "files": stage.files_fingerprint(t.path) if t.path else None}
                for t in tasks]
    rules = config.model_dump(exclude={"examples", "enabled"})
    return stage.StageFolder(out, "decontaminate",
                             stage.fingerprint(rules, stage.input_fingerprint(generated), task_ids, VERSION))


def run(generated: str | Path, out: str | Path, tasks: list[EvalTask], config: DecontaminateConfig) -> Path:
    """Write the decontaminated copy of the generate folder `generated` into `out`; return `out`."""
    generated = Path(generated)
    folder = stage_folder(generated, out, tasks, config)
    if folder.complete():
        log.info("%s is complete for these inputs; nothing to do", folder.path)
        return folder.path
    folder.begin(json.dumps({"generated": str(generated), "tasks": [t.model_dump(mode="json") for t in tasks],
                             "decontaminate": config.model_dump()}, indent=2) + "\n")
    texts, notes = task_texts(tasks)
    index = EvalIndex(texts, config)
    rows = read_dir(generated / "examples", EXAMPLE_SCHEMA).to_pylist()
    kept, removed = filter_rows(rows, index)
    write_atomic(pa.Table.from_pylist(kept, schema=EXAMPLE_SCHEMA), folder.path / "examples" / "part-00000.parquet")
    write_atomic(pa.Table.from_pylist(removed, schema=REMOVED_SCHEMA), folder.path / "removed.parquet")
    report = build_report(len(rows), kept, removed, len(index), notes, config)
    stage.write_json(folder.path / "report.json", report)
    folder.finish({**report, "example_columns": list(EXAMPLE_COLUMNS), "source": str(generated)})
    log.info("decontamination: removed %d of %d rows (%s); %d evaluation texts", len(removed), len(rows),
             dict(report["by_task"]), len(index))
    return folder.path


def build_report(n_in: int, kept: list[dict], removed: list[dict], n_eval: int, notes: list[str],
                 config: DecontaminateConfig) -> dict:
    return {
        "examples_in": n_in,
        "examples_kept": len(kept),
        "removed": len(removed),
        "by_task": dict(Counter(r["eval_task"] for r in removed).most_common()),
        "by_rule": dict(Counter(r["rule"] for r in removed).most_common()),
        "eval_texts": n_eval,
        "notes": notes,
        "rules": config.model_dump(exclude={"examples", "enabled"}),
        "examples": [{"id": r["id"], "field": r["field"], "text": r[r["field"]][:200], "rule": r["rule"],
                      "eval_task": r["eval_task"], "eval_text": r["eval_text"][:200]}
                     for r in removed[:config.examples]],
    }


def read_report(folder: str | Path) -> dict | None:
    """A finished pass's report (None when the folder holds none)."""
    path = Path(folder) / "report.json"
    if not (Path(folder) / stage.MANIFEST).is_file() or not path.is_file():
        return None
    return json.loads(path.read_text())
