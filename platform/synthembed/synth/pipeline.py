"""The generation run: brainstorm -> plan -> examples (primary engine, then fallback) -> stats -> manifest.

`run(config)` is the library entry point of `jobs/generate.py` and of the pipeline job. Both steps that
call an LLM, brainstorm and examples, go through the same supervised, resumable `passes.engine_pass`, and
the folder is a ledger of committed parts (`ledger`): kill the job at any point and the same command
resumes where it stopped, without generating a finished row again.

1. brainstorm (asymmetric types): the task-definition calls of `plan.brainstorm_requests`; once every call
   has an outcome, `brainstorm.parquet` holds the task pools.
2. plan: `plan.parquet` (see `plan`), written once.
3. engine passes: pass 0 sends every request that has no outcome yet to the primary engine; pass k sends
   the requests pass k-1 rejected (except duplicates) to fallback engine k. A request ends either as one
   row in `examples/` (with the producing `generator`) or with its final attempt in `rejects/`.
4. `stats.json`, `summary.md`, then `manifest.json` last.

If an engine the job owns keeps dying, `EngineFailed` stops the run with one message (engine, exit code or
signal, log tail and path, and what is committed); everything finished stays and the next run reuses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from synthembed import stage
from synthembed.config import dump_config
from synthembed.errors import StageError
from synthembed.synth import language
from synthembed.synth import languages as langs
from synthembed.synth.config import GenerateConfig
from synthembed.synth.embedded import EngineFailed
from synthembed.synth.ledger import Ledger, PartWriter, read_dir, write_atomic
from synthembed.synth.passes import EnginePool, engine_pass
from synthembed.synth.plan import (
    PLAN_SCHEMA, brainstorm_requests, build_plan, plan_family, plan_fingerprint, task_pools,
)
from synthembed.synth.prompts import PROMPT_VERSION
from synthembed.synth.schema import EXAMPLE_COLUMNS, EXAMPLE_SCHEMA, REJECT_COLUMNS
from synthembed.synth.stats import stats as compute_stats
from synthembed.synth.stats import summary_md
from synthembed.synth.tasks import allocate_counts
from synthembed.synth.validate import reject_row

log = logging.getLogger(__name__)

TASKS_SCHEMA = pa.schema([("task_type", pa.string()), ("task", pa.string())])


def _pending_rows(ledger: Ledger, stage: str, idx: int, rows: list[dict]) -> list[dict]:
    todo = set(ledger.pending_for(stage, idx, [r["request_id"] for r in rows]))
    return [r for r in rows if r["request_id"] in todo]


def _brainstorm(config: GenerateConfig, pool: EnginePool, ledger: Ledger, counts: dict[str, int],
                progress: Counter) -> dict[str, list[str]]:
    """Task pools for `counts`: run the brainstorm calls not yet done (all of them the first time, the new
    ones when the plan grows), then freeze the pools in brainstorm.parquet."""
    path = ledger.out / "brainstorm.parquet"
    calls = brainstorm_requests(config, counts)
    if not path.exists() or _pending_rows(ledger, "brainstorm", 0, calls):
        for idx in range(len(pool.list)):
            todo = _pending_rows(ledger, "brainstorm", idx, calls)
            if todo:
                log.info("brainstorm: %d calls on %s", len(todo), pool.list[idx].label)
                engine_pass(config, pool, ledger, idx, "brainstorm", todo, _commit_brainstorm, progress)
        pools = task_pools(ledger.outcomes("brainstorm").to_pylist(), counts)
        write_atomic(pa.Table.from_pylist([{"task_type": t, "task": task} for t, ts in pools.items() for task in ts],
                                          schema=TASKS_SCHEMA), path)
    pools: dict[str, list[str]] = {}
    for r in pq.read_table(path).to_pylist():
        pools.setdefault(r["task_type"], []).append(r["task"])
    return pools


def _commit_brainstorm(rec: dict, writer: PartWriter) -> str:
    writer.add(rec, "done")
    return "brainstorm_calls"


def _load_or_build_plan(config: GenerateConfig, pool: EnginePool, ledger: Ledger, progress: Counter) -> list[dict]:
    """plan.parquet, built on the first run and extended (never rewritten) when `num_examples` grows: the
    rows already planned keep their request ids, so what was generated for them stays theirs."""
    path = ledger.out / "plan.parquet"
    counts = allocate_counts(config.num_examples, config.task_mix, config.min_per_type)
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    have = Counter(r["task_type"] for r in rows)
    if rows and all(have[t] >= n for t, n in counts.items()):
        return rows
    new = build_plan(config, counts, _brainstorm(config, pool, ledger, counts, progress), start=dict(have))
    if rows:
        log.info("growing the plan in %s: %d planned requests + %d new", ledger.out, len(rows), len(new))
    rows = rows + new
    write_atomic(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA), path)
    return rows


def _planned_rows(out: Path) -> int:
    try:
        return pq.read_metadata(out / "plan.parquet").num_rows
    except (OSError, ValueError):
        return 0


def _same_plan_family(config: GenerateConfig):
    """`StageFolder.grows_from` for generate: the folder was planned by this config but for another number of
    rows (its config.yaml says so). A config that no longer parses is another run."""
    def check(folder: Path) -> bool:
        try:
            old = GenerateConfig(**yaml.safe_load((folder / "config.yaml").read_text()))
        except Exception:
            return False
        return plan_family(old) == plan_family(config)
    return check


class _ExampleCommit:
    """Commits a valid example unless its content is already kept (then: a `duplicate` reject)."""

    def __init__(self, seen_ids: set[str], idx: int):
        self.seen_ids, self.idx = seen_ids, idx

    def __call__(self, rec: dict, writer: PartWriter) -> str:
        raw = rec.pop("_raw")
        if rec["id"] in self.seen_ids:  # exact duplicate of a kept example (normalised text)
            writer.add(reject_row(rec, "example", rec["generator"], self.idx,
                                  f"duplicate: same content as id {rec['id']}", raw, False), "reject")
            return "duplicates"
        self.seen_ids.add(rec["id"])
        writer.add(rec, "done")
        return "examples"


def _committed(ledger: Ledger) -> str:
    ex, rj = ledger.outcomes("example").num_rows, ledger.rejects().num_rows
    return (f"{ex} examples and {rj} rejected attempts are committed in {ledger.out}; they are kept, and "
            "re-running the same command resumes from them.")


def _append_run(out: Path, record: dict) -> list[dict]:
    path = out / "runs.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    runs = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line torn by a kill
            runs.append(json.loads(line))
    return runs


def stage_folder(config: GenerateConfig) -> stage.StageFolder:
    """The run folder; its fingerprint is the plan's: what is asked of the engines, not which engines answer.
    A folder planned for fewer rows under the same plan family is extended, not replaced."""
    return stage.StageFolder(config.output_dir, "generate", plan_fingerprint(config),
                             grows_from=_same_plan_family(config))


def run(config: GenerateConfig) -> Path:
    """Generate (or finish generating) the dataset described by `config`; return the output folder."""
    import ray

    folder = stage_folder(config)
    out = folder.path
    if folder.complete():
        log.info("%s is complete for this plan; nothing to do", out)
        return out
    planned = _planned_rows(out)
    if planned > config.num_examples and folder.grows_from(out):
        # A plan only grows: shrinking it would orphan rows already generated for it.
        raise StageError(
            f"generate.num_examples={config.num_examples} is below the {planned} requests already planned in {out}; "
            f"set it to {planned} or more to finish that set, or give a smaller set its own generate.output_dir")
    folder.begin(dump_config(config))
    langs.resolve_weights(config.language_weights, config.languages)  # fail on bad names before any work
    if config.language_check != "off":
        language.require_detector()  # here, once, not as a stack trace from every Ray Data block
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (set by `ray job submit`) or a local cluster
    started = time.time()
    progress: Counter = Counter()
    ledger = Ledger(out)
    with contextlib.ExitStack() as stack:
        pool = EnginePool(config, out, stack)
        try:
            plan = _load_or_build_plan(config, pool, ledger, progress)
            seen_ids = set(ledger.outcomes("example").column("id").to_pylist())
            budget = config.time_budget_minutes
            deadline = None if budget is None else started + 60 * budget
            for idx in range(len(pool.list)):
                if deadline is not None and time.time() >= deadline:
                    break
                todo = _pending_rows(ledger, "example", idx, plan)
                if todo:
                    log.info("engine %d (%s): %d requests (%d already done or tried)", idx, pool.list[idx].label,
                             len(todo), len(plan) - len(todo))
                    engine_pass(config, pool, ledger, idx, "example", todo, _ExampleCommit(seen_ids, idx), progress,
                                deadline)
        except EngineFailed as err:
            _append_run(out, {"ended": _now(), "wall_time_s": round(time.time() - started, 2), "failed": str(err)[:500],
                              "engine_restarts": pool.restarts(), **progress})
            raise EngineFailed(f"{err}\n  {_committed(ledger)}") from None
        restarts = pool.restarts()
    owed = sum(len(_pending_rows(ledger, "example", idx, plan)) for idx in range(len(pool.list)))
    runs = _append_run(out, {"ended": _now(), "wall_time_s": round(time.time() - started, 2),
                             "engine_restarts": restarts, **progress, **({"owed": owed} if owed else {})})
    stats = compute_stats(ledger, plan, runs)
    stage.write_text(out / "stats.json", stats.model_dump_json(indent=2) + "\n")
    stage.write_text(out / "summary.md", summary_md(stats))
    manifest = {
        "examples": stats.examples,
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet") if not p.name.startswith(".")),
        "prompt_version": PROMPT_VERSION,
        "example_columns": list(EXAMPLE_COLUMNS), "reject_columns": list(REJECT_COLUMNS),
    }
    if owed:  # stopped by the time budget: a usable partial set, continued by the next run
        folder.finish({**manifest, "partial": True, "requests_planned": len(plan), "requests_owed": owed},
                      fingerprint=stage.fingerprint(folder.fingerprint, "partial", stats.examples, owed, n=16))
        log.info("generate: time budget reached with %d examples in %s; %d of %d planned requests are left for "
                 "the next run", stats.examples, out, owed, len(plan))
        return out
    folder.finish(manifest)
    log.info("generate: %d examples in %s (%s)", stats.examples, out, stats.by_task_type)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_examples(out: str | Path) -> pa.Table:
    """All valid examples of a generate output folder (EXAMPLE_SCHEMA)."""
    return read_dir(Path(out) / "examples", EXAMPLE_SCHEMA)
