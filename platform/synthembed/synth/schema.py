"""The output data contract of `jobs/generate.py`: the ONE definition of the example and reject schemas.

Output folder (`generate.output_dir`):

    config.yaml            the resolved config of the run
    brainstorm/*.parquet   step-1 outcomes, one row per brainstorm call (resumable like examples/)
    brainstorm.parquet     the task pools built from them (written once every call has an outcome)
    plan.parquet           every planned request: request_id, task_type, task, language(s), placeholders
    examples/*.parquet     valid examples, EXAMPLE_SCHEMA (parts written atomically as the run goes)
    rejects/*.parquet      failed attempts (either step) with the raw output and the reason, REJECT_SCHEMA
    attempts/*.parquet     one row per request sent to an engine (the attempt number seeds retries)
    engine-<i>.log, .json  an embedded engine's own log, and its current pid, port and restart count
    runs.jsonl             one line per run (finished or stopped by a failing engine): wall time, counts,
                           engine restarts
    stats.json, summary.md counts per task type / language / engine, validity, reject reasons, tokens,
                           engine restarts, wall time
    manifest.json          written last: the folder is complete only when it exists

Example row (`EXAMPLE_SCHEMA`), one per training example:

    id              stable hash of the normalised content (task type, instruction, query, positive, negative);
                    equal ids mean duplicate examples
    task_type       short_long | long_short | short_short | long_long | sts | bitext
    instruction     the task definition, used as "Instruct: {instruction}\\nQuery: ..." at training time
    query           query-side text
    positive        document-side text that matches the query
    hard_negative   a harder non-matching document (null for short_short and long_long)
    language        language of the example (for bitext: the source language)
    src_language    bitext only: language of `query`; null otherwise
    tgt_language    bitext only: language of `positive` and `hard_negative`; null otherwise
    placeholders    JSON object of the sampled prompt placeholders
    generator       "<engine name>:<model>" that produced the row
    prompt_version  version of the prompt templates
    request_id      stable id of the planned request (resume key); extra to DESIGN.md
    tokens_in, tokens_out   prompt and completion tokens of the producing call; extra to DESIGN.md
    language_verdict        JSON of the language check (synth.language.RowVerdict: the row's verdict and, per
                            text field, the language asked, found and its probability); null when
                            generate.language_check is off; extra to DESIGN.md. Rejects carry it too.

Training reads `instruction`, `query`, `positive`, `hard_negative` (and may filter on `task_type`).
"""

from __future__ import annotations

import re
import unicodedata

import pyarrow as pa

from synthembed.stage import fingerprint

EXAMPLE_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("query", pa.string(), nullable=False),
    pa.field("positive", pa.string(), nullable=False),
    pa.field("hard_negative", pa.string()),
    pa.field("language", pa.string(), nullable=False),
    pa.field("src_language", pa.string()),
    pa.field("tgt_language", pa.string()),
    pa.field("placeholders", pa.string(), nullable=False),
    pa.field("generator", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("tokens_in", pa.int64()),
    pa.field("tokens_out", pa.int64()),
    pa.field("language_verdict", pa.string()),
])

EXAMPLE_COLUMNS: tuple[str, ...] = tuple(EXAMPLE_SCHEMA.names)

REJECT_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),          # "brainstorm" | "example"
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("language", pa.string()),
    pa.field("generator", pa.string(), nullable=False),
    pa.field("engine_index", pa.int32(), nullable=False),     # 0 = primary, 1 = fallback
    pa.field("reason", pa.string(), nullable=False),          # "<code>: <detail>", see parse.REASONS
    pa.field("raw", pa.string()),                             # the engine's raw output (or error body)
    pa.field("retry_next", pa.bool_(), nullable=False),       # a later engine will try this request again
    pa.field("tokens_in", pa.int64()),
    pa.field("tokens_out", pa.int64()),
    pa.field("language_verdict", pa.string()),               # the language check's verdict, when it ran
])

REJECT_COLUMNS: tuple[str, ...] = tuple(REJECT_SCHEMA.names)

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, outer punctuation stripped: the dedup form."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _WS.sub(" ", text).strip()
    return text.strip(" .,;:!?\"'`()[]{}«»“”‘’")


def stable_hash(*parts: object, n: int = 16) -> str:
    """Request ids and content ids: the project's one stable hash, at 16 hex digits."""
    return fingerprint(*parts, n=n)


def example_id(task_type: str, instruction: str, query: str, positive: str, hard_negative: str | None) -> str:
    """Content hash: the same normalised example always gets the same id (dedup across runs)."""
    return stable_hash(
        task_type, normalize_text(instruction), normalize_text(query), normalize_text(positive),
        normalize_text(hard_negative) if hard_negative else None,
    )
