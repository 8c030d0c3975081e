"""What to ask the engines: brainstorm calls, the plan of example requests, and the request rows.

- brainstorm (asymmetric types): ceil(rows / examples_per_task / tasks_per_brainstorm) calls per type ask
  for task definitions (`brainstorm_requests`); their outcomes become the task pools (`task_pools`).
- plan: every example request gets a stable `request_id`, task type (exact quotas from `task_mix`),
  language (or language pair), placeholders and task (`build_plan`; for sts and bitext the task column holds
  the row's topic when `symmetric_topics` is on, else it is empty); stored in `plan.parquet` with a
  fingerprint of the config fields that shape it, so a re-run with a different plan never mixes outputs. A
  larger `num_examples` under the same other fields (`plan_family`) appends new rows to the stored plan.
- request rows (`request_row`): what one engine gets for one request; the seed comes from the request,
  the engine and the attempt, so a retry never replays the exact sampling that failed.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import defaultdict

import pyarrow as pa

from synthembed.synth import languages as langs
from synthembed.synth.config import GenerateConfig
from synthembed.synth.ledger import seed_int
from synthembed.synth.prompts import (
    PROMPT_VERSION, brainstorm_messages, brainstorm_schema, example_messages, example_schema,
)
from synthembed.synth.schema import normalize_text, stable_hash
from synthembed.synth.tasks import ASYMMETRIC, SPECS, SYMMETRIC_TOPICS, sample_placeholders, task_instruction

log = logging.getLogger(__name__)

PLAN_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("task_type", pa.string()), ("task", pa.string()), ("instruction", pa.string()),
    ("language", pa.string()), ("src_language", pa.string()), ("tgt_language", pa.string()),
    ("placeholders", pa.string()),
])


# What each planned request looks like. `num_examples` only says how many there are: a plan made for fewer
# rows is the first part of a plan for more, so a folder can grow (see `grows_from`) instead of restarting.
PLAN_KEYS = ("seed", "task_mix", "min_per_type", "languages", "language_weights", "tasks_per_brainstorm",
             "examples_per_task", "lengths")


def _plan_fields(config: GenerateConfig, keys: tuple[str, ...]) -> dict:
    fields = {k: config.model_dump(mode="json")[k] for k in keys}
    if config.symmetric_topics:
        # only when on: plans made before the setting existed keep their fingerprints (and can still grow)
        fields["symmetric_topics"] = True
    return fields


def plan_family(config: GenerateConfig) -> str:
    return stable_hash(_plan_fields(config, PLAN_KEYS), PROMPT_VERSION)


def plan_fingerprint(config: GenerateConfig) -> str:
    return stable_hash(_plan_fields(config, ("num_examples", *PLAN_KEYS)), PROMPT_VERSION)


def brainstorm_requests(config: GenerateConfig, counts: dict[str, int]) -> list[dict]:
    n = config.tasks_per_brainstorm
    rows = []
    for t in ASYMMETRIC:
        if counts.get(t, 0) == 0:
            continue
        for k in range(math.ceil(math.ceil(counts[t] / config.examples_per_task) / n)):
            rows.append({"request_id": f"bs-{stable_hash(config.seed, t, k, n, PROMPT_VERSION)}", "task_type": t})
    return rows


def task_pools(outcomes: list[dict], counts: dict[str, int]) -> dict[str, list[str]]:
    """Unique task definitions per type, in request order; the prompt's own examples if a type got none."""
    pools: dict[str, list[str]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for rec in sorted(outcomes, key=lambda r: r["request_id"]):
        for task in rec["tasks"]:
            key = normalize_text(task)
            if key not in seen[rec["task_type"]]:
                seen[rec["task_type"]].add(key)
                pools[rec["task_type"]].append(task)
    for t in ASYMMETRIC:
        if counts.get(t, 0) and not pools.get(t):
            # Never leave a type without tasks: fall back to the prompt's own example tasks, and say so.
            log.warning("brainstorm produced no usable %s task; using the prompt's example tasks", t)
            pools[t] = list(SPECS[t].brainstorm.examples)
    return dict(pools)


def build_plan(config: GenerateConfig, counts: dict[str, int], pools: dict[str, list[str]],
               start: dict[str, int] | None = None) -> list[dict]:
    """The requests (t, i) for i < counts[t], or only those with i >= start[t] (a grown plan's new rows).

    Row (t, i) draws its language and placeholders from its own seed, so it is the same in every plan that
    holds it; its task is `pools[t][i % len(pools[t])]`, so a grown plan keeps its first part as stored.
    """
    weights = langs.resolve_weights(config.language_weights, config.languages)
    rows = []
    for t, n in counts.items():
        for i in range((start or {}).get(t, 0), n):
            rng = random.Random(seed_int(config.seed, t, i))
            ph = sample_placeholders(t, rng)
            src = tgt = None
            if t == "bitext":
                src, tgt = langs.sample_bitext_pair(rng, weights)
                lang = src
            else:
                lang = langs.sample_language(rng, weights)
            if t in ASYMMETRIC:
                task = pools[t][i % len(pools[t])]
            else:
                # a symmetric row's `task` is its topic; drawn last, so the row's other draws stay as they were
                task = rng.choice(SYMMETRIC_TOPICS) if config.symmetric_topics else None
            ph_json = json.dumps(ph, sort_keys=True)
            rows.append({
                "request_id": stable_hash(config.seed, t, i, task, lang, src, tgt, ph_json, PROMPT_VERSION),
                "task_type": t, "task": task or "", "instruction": task_instruction(t, task), "language": lang,
                "src_language": src or "", "tgt_language": tgt or "", "placeholders": ph_json,
            })
    random.Random(config.seed).shuffle(rows)  # interleave types so partial output is already mixed
    return rows


def request_row(stage: str, row: dict, config: GenerateConfig, engine_index: int, attempt: int) -> dict:
    """One engine request: the row's own columns, the chat messages, the JSON schema and the seed."""
    if stage == "brainstorm":
        msgs = brainstorm_messages(row["task_type"], config.tasks_per_brainstorm)
        schema = brainstorm_schema(config.tasks_per_brainstorm, config.brainstorm_max_chars)
    else:
        ph = json.loads(row["placeholders"])
        msgs = example_messages(row["task_type"], row["task"] or None, row["language"], ph,
                                row["src_language"] or None, row["tgt_language"] or None)
        schema = example_schema(row["task_type"], ph, config.lengths.as_dict())
    return {
        **row, "stage": stage, "engine_index": engine_index, "messages": json.dumps(msgs, ensure_ascii=False),
        "schema": json.dumps(schema), "seed": seed_int(row["request_id"], engine_index, attempt),
    }
