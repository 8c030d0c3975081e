"""The generate output folder as a ledger: atomic Parquet parts, what is done, what each engine still owes.

Every outcome of a request is committed in small atomic parts (`PartWriter`), so a killed job loses at
most `commit_every` rows and a re-run resumes from what the parts say:

    brainstorm/*.parquet   step-1 outcomes: the task definitions one brainstorm call produced
    examples/*.parquet     step-2 outcomes: one valid example per request (EXAMPLE_SCHEMA)
    rejects/*.parquet      failed attempts of either step, with the raw output and the reason (REJECT_SCHEMA)
    attempts/*.parquet     one row per request sent to an engine, written before sending: the attempt
                           number seeds the next try, so a row that crashed an engine is not re-sent with
                           the seed that crashed it

A request is done for a step when it has an outcome; engine k owes the requests that engine k-1 rejected
with `retry_next` (engine 0 owes all), minus those engine k already answered (`pending_for`).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthembed.synth.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, stable_hash

BRAINSTORM_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("tasks", pa.list_(pa.string()), nullable=False),
    pa.field("generator", pa.string(), nullable=False),
])
ATTEMPT_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("engine_index", pa.int32(), nullable=False),
    pa.field("attempt", pa.int32(), nullable=False),
])
# stage -> (folder, schema) of its successful outcomes
OUTCOMES = {"brainstorm": ("brainstorm", BRAINSTORM_SCHEMA), "example": ("examples", EXAMPLE_SCHEMA)}


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # readers only ever see complete files


def read_dir(folder: Path, schema: pa.Schema) -> pa.Table:
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files])


def seed_int(*parts: object) -> int:
    return int(stable_hash(*parts), 16) % (2**31 - 1)


def _part_name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}.parquet"


class PartWriter:
    """Buffers outcome rows and commits them as atomic Parquet parts (per stage folder and rejects/)."""

    def __init__(self, out: Path, stage: str, tag: str, commit_every: int):
        self.out, self.tag, self.commit_every = out, tag, commit_every
        self.folder, self.schema = OUTCOMES[stage]
        self.done: list[dict] = []
        self.rejects: list[dict] = []
        self.last_flush = time.time()

    def add(self, row: dict, kind: str) -> None:
        (self.rejects if kind == "reject" else self.done).append(row)
        if len(self.done) + len(self.rejects) >= self.commit_every or time.time() - self.last_flush > 60:
            self.flush()

    def flush(self) -> None:
        part = _part_name(self.tag)
        # Rejects first: if the job dies between the two writes, the successful requests simply run again.
        if self.rejects:
            write_atomic(pa.Table.from_pylist(self.rejects, schema=REJECT_SCHEMA), self.out / "rejects" / part)
        if self.done:
            write_atomic(pa.Table.from_pylist(self.done, schema=self.schema), self.out / self.folder / part)
        self.done, self.rejects = [], []
        self.last_flush = time.time()


class Ledger:
    """Reads the folder's outcomes and keeps the attempt counts."""

    def __init__(self, out: Path):
        self.out = out
        self._attempts: Counter | None = None

    def outcomes(self, stage: str) -> pa.Table:
        folder, schema = OUTCOMES[stage]
        return read_dir(self.out / folder, schema)

    def rejects(self) -> pa.Table:
        return read_dir(self.out / "rejects", REJECT_SCHEMA)

    def pending_for(self, stage: str, engine_index: int, ids: list[str]) -> list[str]:
        return pending_for(engine_index, ids, self.outcomes(stage), self.rejects(), stage)

    def next_attempts(self, ids: list[str], engine_index: int) -> dict[str, int]:
        """Attempt numbers for sending `ids` to `engine_index` now; recorded before anything is sent."""
        if self._attempts is None:
            rows = read_dir(self.out / "attempts", ATTEMPT_SCHEMA).select(["request_id", "engine_index"]).to_pylist()
            self._attempts = Counter((r["request_id"], r["engine_index"]) for r in rows)
        attempts = {i: self._attempts[(i, engine_index)] for i in ids}
        if ids:
            table = pa.Table.from_pylist([{"request_id": i, "engine_index": engine_index, "attempt": a}
                                          for i, a in attempts.items()], schema=ATTEMPT_SCHEMA)
            write_atomic(table, self.out / "attempts" / _part_name(f"e{engine_index}"))
            self._attempts.update((i, engine_index) for i in ids)
        return attempts


def pending_for(engine_index: int, ids: list[str], done: pa.Table, rejects: pa.Table, stage: str = "example") -> list[str]:
    """Requests of `stage` that engine `engine_index` still has to try (see the module docstring)."""
    done_ids = set(done.column("request_id").to_pylist())
    rj = [r for r in rejects.select(["request_id", "stage", "engine_index", "retry_next"]).to_pylist()
          if r["stage"] == stage]
    tried_here = {r["request_id"] for r in rj if r["engine_index"] == engine_index}
    if engine_index == 0:
        eligible = ids
    else:
        eligible_set = {r["request_id"] for r in rj if r["engine_index"] == engine_index - 1 and r["retry_next"]}
        eligible = [i for i in ids if i in eligible_set]
    return [i for i in eligible if i not in done_ids and i not in tried_here]
