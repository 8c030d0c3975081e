"""The generation run: brainstorm -> plan -> generate (primary, then fallback) -> validate -> dedup -> write.

`run(config)` is the library entry point of `jobs/generate.py` and of the pipeline job. The heavy work
(engine calls and validation) runs as Ray Data pipelines; the driver streams their results and commits
them in small atomic Parquet parts, so a killed job loses at most `commit_every` rows and a re-run
resumes where it stopped:

1. brainstorm (asymmetric types): ceil(rows / examples_per_task / tasks_per_brainstorm) calls per type
   ask for task definitions; `brainstorm.parquet` is written once all of them are done.
2. plan: every request gets a stable `request_id`, task type (exact quotas from `task_mix`), language
   (or language pair), placeholders and task; stored in `plan.parquet` with a fingerprint of the config
   fields that shape it, so a re-run with a different plan fails instead of mixing outputs.
3. engine passes: pass 0 sends every request that has no outcome yet to the primary engine; pass k
   sends the requests pass k-1 rejected (except duplicates) to fallback engine k. A request ends either
   as one row in `examples/` (with the producing `generator`) or with its final attempt in `rejects/`.
4. `stats.json`, `summary.md`, then `manifest.json` last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from synthembed.config import dump_config
from synthembed.synth import languages as langs
from synthembed.synth.config import EngineConfig, GenerateConfig
from synthembed.synth.engines import EmbeddedServer, apply_engine
from synthembed.synth.parse import Rejected, parse_brainstorm, parse_json_object, validate_example
from synthembed.synth.prompts import (
    BRAINSTORM, PROMPT_VERSION, brainstorm_messages, brainstorm_schema, example_messages, example_schema,
)
from synthembed.synth.schema import (
    EXAMPLE_COLUMNS, EXAMPLE_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA, example_id, stable_hash,
)
from synthembed.synth.tasks import ASYMMETRIC, allocate_counts, instruction_for, sample_placeholders

log = logging.getLogger(__name__)

PLAN_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("task_type", pa.string()), ("task", pa.string()), ("instruction", pa.string()),
    ("language", pa.string()), ("src_language", pa.string()), ("tgt_language", pa.string()),
    ("placeholders", pa.string()),
])


# ------------------------------------------------------------------------------------------ file helpers
def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # readers only ever see complete files


def _read_dir(folder: Path, schema: pa.Schema) -> pa.Table:
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files])


def _seed_int(*parts: object) -> int:
    return int(stable_hash(*parts), 16) % (2**31 - 1)


class PartWriter:
    """Buffers outcome rows and commits them as atomic Parquet parts under examples/ and rejects/."""

    def __init__(self, out: Path, tag: str, commit_every: int):
        self.out, self.tag, self.commit_every = out, tag, commit_every
        self.examples: list[dict] = []
        self.rejects: list[dict] = []
        self.last_flush = time.time()
        self.committed = Counter()

    def add(self, row: dict, kind: str) -> None:
        (self.examples if kind == "example" else self.rejects).append(row)
        if len(self.examples) + len(self.rejects) >= self.commit_every or time.time() - self.last_flush > 60:
            self.flush()

    def flush(self) -> None:
        part = f"{self.tag}-{uuid.uuid4().hex[:8]}.parquet"
        # Rejects first: if the job dies between the two writes, the examples' requests simply run again.
        if self.rejects:
            _write_atomic(pa.Table.from_pylist(self.rejects, schema=REJECT_SCHEMA), self.out / "rejects" / part)
        if self.examples:
            _write_atomic(pa.Table.from_pylist(self.examples, schema=EXAMPLE_SCHEMA), self.out / "examples" / part)
        self.committed.update(examples=len(self.examples), rejects=len(self.rejects))
        self.examples, self.rejects = [], []
        self.last_flush = time.time()


# ---------------------------------------------------------------------------------------------- engines
class Engines:
    """Starts embedded servers on first use and stops them when the run ends."""

    def __init__(self, config: GenerateConfig, out: Path, stack: contextlib.ExitStack):
        self.list: list[EngineConfig] = [config.engine] + ([config.fallback] if config.fallback else [])
        self.out, self.stack = out, stack
        self._endpoints: dict[int, tuple[str | None, str | None]] = {}

    def endpoint(self, idx: int) -> tuple[str | None, str | None]:
        if idx not in self._endpoints:
            e = self.list[idx]
            if e.kind == "embedded":
                srv = self.stack.enter_context(EmbeddedServer(e, log_path=self.out / f"engine-{idx}.log"))
                self._endpoints[idx] = (srv.base_url, srv.alias)
            elif e.kind == "openai":
                self._endpoints[idx] = (e.base_url, e.model)
            else:
                self._endpoints[idx] = (None, None)
        return self._endpoints[idx]

    def run(self, idx: int, requests: list[dict]):
        """A Ray Dataset of engine outputs (engines.OUTPUT_COLUMNS + the requests' plan columns)."""
        import ray

        url, model_name = self.endpoint(idx)
        ds = ray.data.from_items(requests, override_num_blocks=max(1, min(len(requests), 64)))
        return apply_engine(ds, self.list[idx], url, model_name)


# -------------------------------------------------------------------------------------------- brainstorm
def _brainstorm(config: GenerateConfig, out: Path, counts: dict[str, int], engines: Engines) -> dict[str, list[str]]:
    path = out / "brainstorm.parquet"
    if path.exists():
        t = pq.read_table(path).to_pylist()
        pools: dict[str, list[str]] = defaultdict(list)
        for r in t:
            pools[r["task_type"]].append(r["task"])
        return dict(pools)
    for stale in (out / "rejects").glob("brainstorm-*.parquet"):  # from a run killed mid-brainstorm
        stale.unlink()
    n = config.tasks_per_brainstorm
    pending = []
    for t in ASYMMETRIC:
        if counts.get(t, 0) == 0:
            continue
        calls = math.ceil(math.ceil(counts[t] / config.examples_per_task) / n)
        for k in range(calls):
            rid = f"bs-{stable_hash(config.seed, t, k, n, PROMPT_VERSION)}"
            pending.append({
                "request_id": rid, "task_type": t, "engine_index": 0,
                "messages": json.dumps(brainstorm_messages(t, n)),
                "schema": json.dumps(brainstorm_schema(n, config.brainstorm_max_chars)),
                "seed": _seed_int(rid, 0),
            })
    pools = defaultdict(list)
    seen = defaultdict(set)
    writer = PartWriter(out, "brainstorm", commit_every=10**9)
    for idx in range(len(engines.list)):
        if not pending:
            break
        for r in pending:
            r["engine_index"] = idx
            r["seed"] = _seed_int(r["request_id"], idx)
        failed = []
        by_id = {r["request_id"]: r for r in pending}
        log.info("brainstorm: %d calls on %s", len(pending), engines.list[idx].label)
        for row in engines.run(idx, pending).iter_rows():
            try:
                if row["error"]:
                    raise Rejected("engine_error", row["error"][:300])
                tasks = parse_brainstorm(row["text"], row["finish_reason"], config.brainstorm_max_chars)
                for task in tasks:
                    key = task.casefold()
                    if key not in seen[row["task_type"]]:
                        seen[row["task_type"]].add(key)
                        pools[row["task_type"]].append(task)
            except Rejected as rej:
                retry = idx + 1 < len(engines.list)
                writer.add(_reject_row(row, "brainstorm", engines.list[idx].label, idx, str(rej),
                                       row["text"] or row["error"], retry), "reject")
                failed.append(by_id[row["request_id"]])
        pending = failed
    for t in ASYMMETRIC:
        if counts.get(t, 0) and not pools.get(t):
            # Never leave a type without tasks: fall back to the prompt's own example tasks, and say so.
            log.warning("brainstorm produced no usable %s task; using the prompt's example tasks", t)
            pools[t] = list(BRAINSTORM[t]["examples"])
    writer.flush()
    rows = [{"task_type": t, "task": task} for t, ts in pools.items() for task in ts]
    _write_atomic(pa.Table.from_pylist(rows, schema=pa.schema([("task_type", pa.string()), ("task", pa.string())])),
                  path)
    return dict(pools)


# -------------------------------------------------------------------------------------------------- plan
def plan_fingerprint(config: GenerateConfig) -> str:
    keys = ("num_examples", "seed", "task_mix", "min_per_type", "languages", "language_weights",
            "tasks_per_brainstorm", "examples_per_task", "lengths")
    return stable_hash({k: config.model_dump(mode="json")[k] for k in keys}, PROMPT_VERSION)


def build_plan(config: GenerateConfig, counts: dict[str, int], pools: dict[str, list[str]]) -> list[dict]:
    weights = langs.resolve_weights(config.language_weights, config.languages)
    rows = []
    for t, n in counts.items():
        for i in range(n):
            rng = random.Random(_seed_int(config.seed, t, i))
            ph = sample_placeholders(t, rng)
            src = tgt = None
            if t == "bitext":
                src, tgt = langs.sample_bitext_pair(rng, weights)
                lang = src
            else:
                lang = langs.sample_language(rng, weights)
            task = pools[t][i % len(pools[t])] if t in ASYMMETRIC else None
            ph_json = json.dumps(ph, sort_keys=True)
            rows.append({
                "request_id": stable_hash(config.seed, t, i, task, lang, src, tgt, ph_json, PROMPT_VERSION),
                "task_type": t, "task": task or "", "instruction": instruction_for(t, task), "language": lang,
                "src_language": src or "", "tgt_language": tgt or "", "placeholders": ph_json,
            })
    random.Random(config.seed).shuffle(rows)  # interleave types so partial output is already mixed
    return rows


def _load_or_build_plan(config: GenerateConfig, out: Path, engines: Engines) -> list[dict]:
    path = out / "plan.parquet"
    fp = plan_fingerprint(config)
    if path.exists():
        meta = pq.read_schema(path).metadata or {}
        old = meta.get(b"fingerprint", b"").decode()
        if old != fp:
            raise RuntimeError(
                f"{out} holds a run planned with different settings (num_examples, seed, task_mix, languages, "
                f"lengths, ...). Use a new generate.output_dir, or delete {out} to start over."
            )
        return pq.read_table(path).to_pylist()
    counts = allocate_counts(config.num_examples, config.task_mix, config.min_per_type)
    pools = _brainstorm(config, out, counts, engines)
    rows = build_plan(config, counts, pools)
    table = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA).replace_schema_metadata({"fingerprint": fp})
    _write_atomic(table, path)
    return rows


def request_row(plan_row: dict, config: GenerateConfig, engine_index: int) -> dict:
    ph = json.loads(plan_row["placeholders"])
    t = plan_row["task_type"]
    msgs = example_messages(t, plan_row["task"] or None, plan_row["language"], ph,
                            plan_row["src_language"] or None, plan_row["tgt_language"] or None)
    return {
        **plan_row, "engine_index": engine_index, "messages": json.dumps(msgs, ensure_ascii=False),
        "schema": json.dumps(example_schema(t, ph, config.lengths.as_dict())),
        "seed": _seed_int(plan_row["request_id"], engine_index),
    }


# ------------------------------------------------------------------------------------------ validation
def _reject_row(row: dict, stage: str, generator: str, idx: int, reason: str, raw: str | None, retry: bool) -> dict:
    return {
        "request_id": row["request_id"], "stage": stage, "task_type": row["task_type"],
        "language": row.get("language") or None, "generator": generator, "engine_index": idx,
        "reason": reason, "raw": raw, "retry_next": retry,
        "tokens_in": int(row.get("tokens_in") or 0), "tokens_out": int(row.get("tokens_out") or 0),
    }


class Validate:
    """Ray Data map: engine output row -> {"kind": "example"|"reject", **columns} (flat, fixed keys)."""

    def __init__(self, generator: str, engine_index: int, retry_next: bool, bounds: dict, metrics: bool):
        self.generator, self.engine_index, self.retry_next = generator, engine_index, retry_next
        self.bounds, self.metrics = bounds, metrics
        self._counter = None

    def _count(self, status: str, task_type: str, reason: str = "") -> None:
        if not self.metrics:
            return
        try:
            if self._counter is None:
                from ray.util.metrics import Counter as RayCounter

                self._counter = RayCounter("synthembed_generate_rows", "generated rows by engine and outcome",
                                           tag_keys=("engine", "status", "task_type", "reason"))
            self._counter.inc(1, tags={"engine": self.generator, "status": status, "task_type": task_type,
                                       "reason": reason})
        except Exception:  # metrics are best-effort; never fail a row for them
            self.metrics = False

    def __call__(self, row: dict) -> dict:
        out = {"kind": "", "payload": ""}
        ph = json.loads(row["placeholders"])
        try:
            if row["error"]:
                raise Rejected("engine_error", row["error"][:500])
            obj = parse_json_object(row["text"], row["finish_reason"])
            fields = validate_example(row["task_type"], obj, ph, self.bounds)
        except Rejected as rej:
            self._count("rejected", row["task_type"], rej.code)
            rec = _reject_row(row, "example", self.generator, self.engine_index, str(rej),
                              row["text"] or row["error"], self.retry_next)
            return {"kind": "reject", "payload": json.dumps(rec, ensure_ascii=False)}
        self._count("valid", row["task_type"])
        ex = {
            "id": example_id(row["task_type"], row["instruction"], fields["query"], fields["positive"],
                             fields["hard_negative"]),
            "task_type": row["task_type"], "instruction": row["instruction"], **fields,
            "language": row["language"], "src_language": row["src_language"] or None,
            "tgt_language": row["tgt_language"] or None, "placeholders": row["placeholders"],
            "generator": self.generator, "prompt_version": PROMPT_VERSION, "request_id": row["request_id"],
            "tokens_in": int(row["tokens_in"] or 0), "tokens_out": int(row["tokens_out"] or 0),
            "_raw": row["text"],
        }
        out.update(kind="example", payload=json.dumps(ex, ensure_ascii=False))
        return out


# ------------------------------------------------------------------------------------------------- run
def _outcomes(out: Path) -> tuple[pa.Table, pa.Table]:
    return _read_dir(out / "examples", EXAMPLE_SCHEMA), _read_dir(out / "rejects", REJECT_SCHEMA)


def pending_for(engine_index: int, plan_ids: list[str], examples: pa.Table, rejects: pa.Table) -> list[str]:
    """Requests engine `engine_index` still has to try (see the module docstring, step 3)."""
    done = set(examples.column("request_id").to_pylist())
    rj = [r for r in rejects.select(["request_id", "stage", "engine_index", "retry_next"]).to_pylist()
          if r["stage"] == "example"]
    tried_here = {r["request_id"] for r in rj if r["engine_index"] == engine_index}
    if engine_index == 0:
        eligible = plan_ids
    else:
        eligible_set = {r["request_id"] for r in rj if r["engine_index"] == engine_index - 1 and r["retry_next"]}
        eligible = [i for i in plan_ids if i in eligible_set]
    return [i for i in eligible if i not in done and i not in tried_here]


def _engine_pass(config: GenerateConfig, out: Path, engines: Engines, idx: int, plan: list[dict],
                 seen_ids: set[str], progress: dict) -> None:
    examples, rejects = _outcomes(out)
    todo = set(pending_for(idx, [r["request_id"] for r in plan], examples, rejects))
    if not todo:
        return
    engine = engines.list[idx]
    log.info("engine %d (%s): %d requests (%d already done or tried)", idx, engine.label, len(todo),
             len(plan) - len(todo))
    requests = [request_row(r, config, idx) for r in plan if r["request_id"] in todo]
    retry_next = idx + 1 < len(engines.list)
    ds = engines.run(idx, requests).map(
        Validate(engine.label, idx, retry_next, config.lengths.as_dict(), config.metrics)
    )
    writer = PartWriter(out, f"e{idx}", config.commit_every)
    for row in ds.iter_rows():
        rec = json.loads(row["payload"])
        if row["kind"] == "example":
            raw = rec.pop("_raw")
            if rec["id"] in seen_ids:  # exact duplicate of a kept example (normalised text)
                writer.add(_reject_row(rec, "example", engine.label, idx, f"duplicate: same content as id {rec['id']}",
                                       raw, False), "reject")
                progress["duplicates"] += 1
                continue
            seen_ids.add(rec["id"])
            writer.add(rec, "example")
            progress["examples"] += 1
        else:
            writer.add(rec, "reject")
            progress["rejects"] += 1
    writer.flush()


def _stats(config: GenerateConfig, out: Path, plan: list[dict], runs: list[dict]) -> dict:
    ex, rj = _outcomes(out)
    exl = ex.drop(["query", "positive", "hard_negative", "instruction", "placeholders"]).to_pylist()
    rjl = rj.drop(["raw"]).to_pylist()
    per_engine: dict[str, Counter] = defaultdict(Counter)
    for r in exl:
        per_engine[r["generator"]]["valid"] += 1
    for r in rjl:
        if r["stage"] == "example":
            per_engine[r["generator"]]["rejected"] += 1
    final_rejects = [r for r in rjl if r["stage"] == "example" and not r["retry_next"]]
    langs_seen = Counter(r["language"] for r in exl)
    tokens_in = sum(r["tokens_in"] or 0 for r in exl) + sum(r["tokens_in"] or 0 for r in rjl)
    tokens_out = sum(r["tokens_out"] or 0 for r in exl) + sum(r["tokens_out"] or 0 for r in rjl)
    return {
        "requests_planned": len(plan),
        "examples": len(exl),
        "requests_rejected_final": len({r["request_id"] for r in final_rejects}),
        "requests_unresolved": len(plan) - len(exl) - len({r["request_id"] for r in final_rejects}),
        "by_task_type": dict(Counter(r["task_type"] for r in exl)),
        "by_language": dict(langs_seen.most_common()),
        "num_languages": len(langs_seen),
        "by_generator": dict(Counter(r["generator"] for r in exl)),
        "validity_per_engine": {
            g: {"valid": c["valid"], "rejected": c["rejected"],
                "valid_rate": c["valid"] / max(1, c["valid"] + c["rejected"])}
            for g, c in per_engine.items()
        },
        "reject_reasons": dict(Counter(r["reason"].split(":")[0] for r in rjl)),
        "brainstorm_rejects": sum(1 for r in rjl if r["stage"] == "brainstorm"),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "wall_time_s": sum(r["wall_time_s"] for r in runs),
        "runs": runs,
        "prompt_version": PROMPT_VERSION,
    }


def _summary_md(stats: dict) -> str:
    lines = [
        "# Synthetic data summary", "",
        f"- examples: **{stats['examples']}** of {stats['requests_planned']} planned requests "
        f"({stats['requests_rejected_final']} rejected after all engines, {stats['requests_unresolved']} unresolved)",
        f"- languages: {stats['num_languages']}; tokens in/out: {stats['tokens_in']} / {stats['tokens_out']}; "
        f"wall time: {stats['wall_time_s']:.1f} s over {len(stats['runs'])} run(s)", "",
        "| task type | examples |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(stats["by_task_type"].items())], "",
        "| engine | valid | rejected | valid rate |", "|---|---|---|---|",
        *[f"| {g} | {v['valid']} | {v['rejected']} | {v['valid_rate']:.1%} |"
          for g, v in stats["validity_per_engine"].items()], "",
        "| reject reason | attempts |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(stats["reject_reasons"].items(), key=lambda kv: -kv[1])], "",
        "| language | examples |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["by_language"].items()], "",
    ]
    return "\n".join(lines)


def run(config: GenerateConfig) -> Path:
    """Generate (or finish generating) the dataset described by `config`; return the output folder."""
    import ray

    out = Path(config.output_dir)
    if (out / "manifest.json").exists():
        log.info("%s is complete (manifest.json exists); nothing to do", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    langs.resolve_weights(config.language_weights, config.languages)  # fail on bad names before any work
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (set by `ray job submit`) or a local cluster
    started = time.time()
    progress = Counter()
    with contextlib.ExitStack() as stack:
        engines = Engines(config, out, stack)
        plan = _load_or_build_plan(config, out, engines)
        examples, _ = _outcomes(out)
        seen_ids = set(examples.column("id").to_pylist())
        for idx in range(len(engines.list)):
            _engine_pass(config, out, engines, idx, plan, seen_ids, progress)
    runs_path = out / "runs.jsonl"
    run_rec = {"ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "wall_time_s": round(time.time() - started, 2), **progress}
    with runs_path.open("a") as f:
        f.write(json.dumps(run_rec) + "\n")
    runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
    stats = _stats(config, out, plan, runs)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    (out / "summary.md").write_text(_summary_md(stats))
    manifest = {
        "complete": True, "stage": "generate", "examples": stats["examples"],
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet") if not p.name.startswith(".")),
        "plan_fingerprint": plan_fingerprint(config), "prompt_version": PROMPT_VERSION,
        "example_columns": list(EXAMPLE_COLUMNS), "reject_columns": list(REJECT_COLUMNS),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_atomic_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log.info("generate: %d examples in %s (%s)", stats["examples"], out, stats["by_task_type"])
    return out


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_examples(out: str | Path) -> pa.Table:
    """All valid examples of a generate output folder (EXAMPLE_SCHEMA)."""
    return _read_dir(Path(out) / "examples", EXAMPLE_SCHEMA)
