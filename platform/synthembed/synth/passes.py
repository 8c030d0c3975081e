"""The engine pool and the one engine pass that brainstorm and example generation both run through.

`EnginePool` starts the job's own engines (embedded llama.cpp servers, supervised: see `embedded`) on
first use and stops them when the run ends. `engine_pass` sends the requests one engine still owes through
it as a Ray Data pipeline (processor -> `Validate`), streams the outcomes to the driver and commits them
in atomic parts (`ledger.PartWriter`):

- a row's own failure (HTTP error, timeout, unreadable response, bad JSON, a field out of bounds) is a
  reject with its reason; with a fallback configured it is marked `retry_next`;
- a row `lost` because the job's engine process was down is not committed: once the supervisor has the
  engine back, the lost rows are sent again (a new attempt, so a new seed), at most
  `engine.max_restarts + 1` more rounds;
- when the supervisor gives the engine up, what was finished is committed and `EngineFailed` stops the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from synthembed.synth.config import EngineConfig, GenerateConfig
from synthembed.synth.embedded import EmbeddedServer
from synthembed.synth.engines import apply_engine, request_dataset
from synthembed.synth.ledger import Ledger, PartWriter
from synthembed.synth.plan import request_row
from synthembed.synth.validate import Validate, reject_row

log = logging.getLogger(__name__)


class EnginePool:
    """The run's engines by index: 0 = primary, 1 = fallback."""

    def __init__(self, config: GenerateConfig, out: Path, stack: contextlib.ExitStack):
        self.list: list[EngineConfig] = [config.engine] + ([config.fallback] if config.fallback else [])
        self.out, self.stack = out, stack
        self.servers: dict[int, EmbeddedServer] = {}
        self._endpoints: dict[int, tuple[str | None, str | None]] = {}

    def owned(self, idx: int) -> bool:
        return self.list[idx].kind == "embedded"

    def endpoint(self, idx: int) -> tuple[str | None, str | None]:
        if idx not in self._endpoints:
            e = self.list[idx]
            if e.kind == "embedded":
                srv = EmbeddedServer(e, log_path=self.out / f"engine-{idx}.log")
                self.stack.callback(srv.stop)  # registered first: a server that fails to start is still stopped
                srv.start()
                self.servers[idx] = srv
                self._endpoints[idx] = (srv.base_url, srv.alias)
            elif e.kind == "openai":
                self._endpoints[idx] = (e.base_url, e.model)
            else:
                self._endpoints[idx] = (None, None)
        return self._endpoints[idx]

    def check(self, idx: int) -> None:
        if idx in self.servers:
            self.servers[idx].check()

    def wait_ready(self, idx: int) -> None:
        if idx in self.servers:
            self.servers[idx].wait_ready()

    def restarts(self) -> dict[str, int]:
        return {self.list[i].label: s.restarts for i, s in self.servers.items()}

    def outputs(self, idx: int, requests: list[dict]):
        """A Ray Dataset of engine outputs (engines.OUTPUT_COLUMNS + the requests' own columns)."""
        url, model_name = self.endpoint(idx)
        return apply_engine(request_dataset(requests, self.list[idx]), self.list[idx], url, model_name)


def engine_pass(config: GenerateConfig, pool: EnginePool, ledger: Ledger, idx: int, stage: str,
                rows: list[dict], commit: Callable[[dict, PartWriter], str], progress: Counter,
                deadline: float | None = None) -> None:
    """Send `rows` (plan or brainstorm rows engine `idx` owes) and commit every outcome.

    `commit(record, writer)` stores one successful outcome and returns the progress key it counts under.
    Past `deadline` (a `time.time()`), it commits what is finished and returns; the rest stays owed.
    """
    engine = pool.list[idx]
    retry_next = idx + 1 < len(pool.list)
    validate = Validate(engine.label, idx, retry_next, config.lengths.as_dict(), config.metrics,
                        config.brainstorm_max_chars, owned=pool.owned(idx), language_check=config.language_check)
    todo = rows
    for round_ in range(engine.max_restarts + 2):
        if round_:
            log.warning("%s: re-sending %d %s request(s) that were in flight when engine %s went down",
                        stage, len(todo), stage, engine.label)
            pool.wait_ready(idx)
            progress["resent"] += len(todo)
        attempts = ledger.next_attempts([r["request_id"] for r in todo], idx)
        requests = [request_row(stage, r, config, idx, attempts[r["request_id"]]) for r in todo]
        writer = PartWriter(ledger.out, stage, f"{stage[0]}{idx}", config.commit_every)
        lost: dict[str, str] = {}
        try:
            for out in pool.outputs(idx, requests).map(validate).iter_rows():
                if out["kind"] == "lost":
                    lost[out["request_id"]] = out["payload"]
                    pool.check(idx)  # given up: commit what is finished (finally) and stop the run
                elif out["kind"] == "reject":
                    writer.add(json.loads(out["payload"]), "reject")
                    progress["rejects" if stage == "example" else f"{stage}_rejects"] += 1
                else:
                    progress[commit(json.loads(out["payload"]), writer)] += 1
                if deadline is not None and time.time() > deadline:
                    log.info("%s: time budget reached on %s; the rest stays for the next run", stage, engine.label)
                    return  # `finally` commits the finished rows; requests in flight are sent again next run
            if lost and round_ == engine.max_restarts + 1:  # the engine answers, but never these rows
                for r in todo:
                    if r["request_id"] in lost:
                        reason = f"engine_error: connection: {lost[r['request_id']][:300]} (in {round_ + 1} rounds)"
                        writer.add(reject_row(r, stage, engine.label, idx, reason, lost[r["request_id"]],
                                              retry_next), "reject")
                lost = {}
        finally:
            writer.flush()
        if not lost:
            return
        todo = [r for r in todo if r["request_id"] in lost]
