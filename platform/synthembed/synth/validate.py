"""Engine output row -> outcome, as a Ray Data map: an example, a brainstorm result, a reject, or `lost`.

Every row leaves as one flat record `{"kind", "request_id", "payload"}` (the payload a JSON string, so
Arrow sees one type whatever the row held):

    example     payload: an EXAMPLE_SCHEMA row (plus `_raw`, the model's text, for duplicate rejects)
    brainstorm  payload: a BRAINSTORM_SCHEMA row (the task definitions of one brainstorm call)
    reject      payload: a REJECT_SCHEMA row whose `reason` is "<code>: <detail>" (codes in synth.parse)
    lost        the request never reached a live engine the job owns (its process was down): it is sent
                again once the engine is back, and never committed as a reject

After parsing and validation, each example goes through the language check (`synth.language.check_row`,
mode `generate.language_check`): its verdict is stored in `language_verdict`, and in `reject` mode a row
in the wrong language becomes a `wrong_language` reject here, so it takes the same path as any other
reject (committed in `rejects/` with its raw output, retried by the fallback engine when there is one).
"""

from __future__ import annotations

import json

from synthembed.synth.language import check_row
from synthembed.synth.parse import Rejected, parse_brainstorm, parse_json_object, validate_example
from synthembed.synth.prompts import PROMPT_VERSION
from synthembed.synth.schema import example_id
from synthembed.synth.transport import CONNECTION


class WrongLanguage(Rejected):
    """A `wrong_language` reject that carries the verdict, so the reject row records it for the stats."""

    def __init__(self, verdict_json: str, detail: str):
        super().__init__("wrong_language", detail)
        self.verdict_json = verdict_json


def reject_row(row: dict, stage: str, generator: str, idx: int, reason: str, raw: str | None, retry: bool,
               language_verdict: str | None = None) -> dict:
    return {
        "request_id": row["request_id"], "stage": stage, "task_type": row["task_type"],
        "language": row.get("language") or None, "generator": generator, "engine_index": idx,
        "reason": reason, "raw": raw, "retry_next": retry,
        "tokens_in": int(row.get("tokens_in") or 0), "tokens_out": int(row.get("tokens_out") or 0),
        "language_verdict": language_verdict,
    }


class Validate:
    """The map itself; `owned` says the engine's process belongs to this job (connection errors = lost)."""

    def __init__(self, generator: str, engine_index: int, retry_next: bool, bounds: dict, metrics: bool,
                 brainstorm_max_chars: int = 160, owned: bool = False, language_check: str = "reject"):
        self.generator, self.engine_index, self.retry_next = generator, engine_index, retry_next
        self.language_check = language_check
        self.bounds, self.metrics, self.brainstorm_max_chars, self.owned = bounds, metrics, brainstorm_max_chars, owned
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
        stage = row["stage"]
        if row["error_kind"] == CONNECTION and self.owned:
            self._count("lost", row["task_type"])
            return {"kind": "lost", "request_id": row["request_id"], "payload": row["error"]}
        try:
            if row["error"]:
                raise Rejected("engine_error", f"{row['error_kind'] or 'engine'}: {row['error'][:500]}")
            if stage == "brainstorm":
                rec = {"request_id": row["request_id"], "task_type": row["task_type"], "generator": self.generator,
                       "tasks": parse_brainstorm(row["text"], row["finish_reason"], self.brainstorm_max_chars)}
                kind = "brainstorm"
            else:
                rec = self._example(row)
                kind = "example"
        except Rejected as rej:
            self._count("rejected", row["task_type"], rej.code)
            rec = reject_row(row, stage, self.generator, self.engine_index, str(rej), row["text"] or row["error"],
                             self.retry_next, getattr(rej, "verdict_json", None))
            kind = "reject"
        else:
            self._count("valid", row["task_type"])
        return {"kind": kind, "request_id": row["request_id"], "payload": json.dumps(rec, ensure_ascii=False)}

    def _example(self, row: dict) -> dict:
        ph = json.loads(row["placeholders"])
        obj = parse_json_object(row["text"], row["finish_reason"])
        fields = validate_example(row["task_type"], obj, ph, self.bounds)
        rec = {
            "id": example_id(row["task_type"], row["instruction"], fields["query"], fields["positive"],
                             fields["hard_negative"]),
            "task_type": row["task_type"], "instruction": row["instruction"], **fields,
            "language": row["language"], "src_language": row["src_language"] or None,
            "tgt_language": row["tgt_language"] or None, "placeholders": row["placeholders"],
            "generator": self.generator, "prompt_version": PROMPT_VERSION, "request_id": row["request_id"],
            "tokens_in": int(row["tokens_in"] or 0), "tokens_out": int(row["tokens_out"] or 0),
            "language_verdict": None, "_raw": row["text"],
        }
        return self._check_language(rec)

    def _check_language(self, rec: dict) -> dict:
        if self.language_check == "off":
            return rec
        verdict = check_row(rec)
        rec["language_verdict"] = verdict.to_json()
        if self.language_check == "reject" and verdict.verdict == "mismatched":
            raise WrongLanguage(rec["language_verdict"], verdict.detail())
        return rec
