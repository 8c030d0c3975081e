"""`stats.json` and `summary.md` of a generate folder: counts per task type, language and engine,
validity, reject reasons, tokens, engine restarts and wall time, read back from the committed parts;
plus the unique task instructions per task type (the paper reports ~150k over its ~500k examples), how
varied the queries are (a small generator falls into a few stock sentences) and the language check per
asked language (every checked attempt: kept rows and `wrong_language` rejects; a bitext row counts once
under each of its two languages, with its side's verdict)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from pydantic import BaseModel

from pydantic import Field

from synthembed.synth.language import side_verdicts
from synthembed.synth.ledger import Ledger
from synthembed.synth.prompts import PROMPT_VERSION
from synthembed.synth.schema import normalize_text


class EngineValidity(BaseModel):
    valid: int
    rejected: int
    valid_rate: float


class LanguageCounts(BaseModel):
    matched: int = 0
    mismatched: int = 0
    unknown: int = 0


class QueryDiversity(BaseModel):
    """How many different queries a task type got, and its most repeated opening: Qwen2.5-Coder-1.5B opened
    23 of its 44 English STS queries with "The quick brown fox", which more rows of the same plan cannot fix."""

    unique_queries: int
    top_opening: str
    top_opening_count: int


class GenerateStats(BaseModel):
    """`stats.json`: what the pipeline summary reads field by field (a renamed field is an error, not a gap)."""

    requests_planned: int
    examples: int
    requests_rejected_final: int
    requests_unresolved: int
    by_task_type: dict[str, int]
    by_language: dict[str, int]
    num_languages: int
    by_generator: dict[str, int]
    validity_per_engine: dict[str, EngineValidity]
    reject_reasons: dict[str, int]
    brainstorm_rejects: int
    engine_restarts: dict[str, int]
    requests_resent: int
    tokens_in: int
    tokens_out: int
    wall_time_s: float
    runs: list[dict]
    prompt_version: str
    # Defaults: a stats.json written before these fields existed still reads.
    unique_instructions: dict[str, int] = Field(default_factory=dict, description="per task type (normalised text)")
    unique_instructions_total: int = 0
    language_check: dict[str, LanguageCounts] = Field(default_factory=dict, description="asked language -> verdicts")
    query_diversity: dict[str, QueryDiversity] = Field(default_factory=dict, description="per task type")


def stats(ledger: Ledger, plan: list[dict], runs: list[dict]) -> GenerateStats:
    ex, rj = ledger.outcomes("example"), ledger.rejects()
    unique = unique_instructions(ex.column("task_type").to_pylist(), ex.column("instruction").to_pylist())
    diversity = query_diversity(ex.column("task_type").to_pylist(), ex.column("query").to_pylist())
    exl = ex.drop(["query", "positive", "hard_negative", "instruction", "placeholders"]).to_pylist()
    rjl = rj.drop(["raw"]).to_pylist()
    per_engine: dict[str, Counter] = defaultdict(Counter)
    for r in exl:
        per_engine[r["generator"]]["valid"] += 1
    for r in rjl:
        if r["stage"] == "example":
            per_engine[r["generator"]]["rejected"] += 1
    done = {r["request_id"] for r in exl}
    final_rejects = {r["request_id"] for r in rjl if r["stage"] == "example" and not r["retry_next"]} - done
    langs_seen = Counter(r["language"] for r in exl)
    restarts: Counter = Counter()
    for run in runs:
        restarts.update(run.get("engine_restarts", {}))
    return GenerateStats.model_validate({
        "requests_planned": len(plan),
        "examples": len(exl),
        "requests_rejected_final": len(final_rejects),
        "requests_unresolved": len(plan) - len(exl) - len(final_rejects),
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
        "engine_restarts": dict(restarts),
        "requests_resent": sum(run.get("resent", 0) for run in runs),
        "tokens_in": sum(r["tokens_in"] or 0 for r in exl) + sum(r["tokens_in"] or 0 for r in rjl),
        "tokens_out": sum(r["tokens_out"] or 0 for r in exl) + sum(r["tokens_out"] or 0 for r in rjl),
        "wall_time_s": sum(r["wall_time_s"] for r in runs),
        "runs": runs,
        "prompt_version": PROMPT_VERSION,
        "unique_instructions": {t: len(s) for t, s in sorted(unique.items())},
        "unique_instructions_total": len({(t, i) for t, s in unique.items() for i in s}),
        "language_check": language_counts(r["language_verdict"] for r in exl + rjl),
        "query_diversity": diversity,
    })


def unique_instructions(task_types: list[str], instructions: list[str]) -> dict[str, set[str]]:
    """Task type -> its distinct instructions (normalised, so case and spacing variants count once)."""
    out: dict[str, set[str]] = defaultdict(set)
    for t, inst in zip(task_types, instructions):
        out[t].add(normalize_text(inst))
    return dict(out)


OPENING_WORDS = 4  # "the quick brown fox": long enough to be a stock sentence, short enough to survive rewording


def opening(query: str) -> str:
    """The first OPENING_WORDS words of a query, normalised, punctuation dropped."""
    return " ".join(re.findall(r"\w+", normalize_text(query))[:OPENING_WORDS])


def query_diversity(task_types: list[str], queries: list[str]) -> dict[str, dict]:
    """Task type -> distinct queries (normalised) and its most common `opening`, with how many rows have it."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for t, q in zip(task_types, queries):
        by_type[t].append(q)
    out = {}
    for t, qs in sorted(by_type.items()):
        top, count = Counter(opening(q) for q in qs).most_common(1)[0]
        out[t] = {"unique_queries": len({normalize_text(q) for q in qs}), "top_opening": top,
                  "top_opening_count": count}
    return out


def language_counts(verdicts) -> dict[str, dict[str, int]]:
    """Asked language -> {matched, mismatched, unknown}, from `language_verdict` values (None: not checked)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for v in verdicts:
        for lang, verdict in side_verdicts(v).items():
            counts[lang][verdict] += 1
    return {lang: {k: c[k] for k in ("matched", "mismatched", "unknown")}
            for lang, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))}


def summary_md(st: GenerateStats) -> str:
    stats = st.model_dump()
    restarts = ", ".join(f"{k}: {v}" for k, v in stats["engine_restarts"].items()) or "none"
    lines = [
        "# Synthetic data summary", "",
        f"- examples: **{stats['examples']}** of {stats['requests_planned']} planned requests "
        f"({stats['requests_rejected_final']} rejected after all engines, {stats['requests_unresolved']} unresolved)",
        f"- languages: {stats['num_languages']}; tokens in/out: {stats['tokens_in']} / {stats['tokens_out']}; "
        f"wall time: {stats['wall_time_s']:.1f} s over {len(stats['runs'])} run(s)",
        f"- engine restarts: {restarts}; requests re-sent after an engine went down: {stats['requests_resent']}", "",
        "| task type | examples |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(stats["by_task_type"].items())], "",
        "| engine | valid | rejected | valid rate |", "|---|---|---|---|",
        *[f"| {g} | {v['valid']} | {v['rejected']} | {v['valid_rate']:.1%} |"
          for g, v in stats["validity_per_engine"].items()], "",
        "| reject reason | attempts |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(stats["reject_reasons"].items(), key=lambda kv: -kv[1])], "",
        "| language | examples |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["by_language"].items()], "",
        f"Unique task instructions: **{stats['unique_instructions_total']}** over {stats['examples']} examples "
        "(sts and bitext have one fixed instruction each).", "",
        "| task type | unique instructions |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["unique_instructions"].items()], "",
    ]
    if stats["query_diversity"]:
        lines += [
            f"Query diversity (a stock opening repeated across rows teaches one sentence many times; openings are "
            f"the first {OPENING_WORDS} words, normalised):", "",
            "| task type | examples | unique queries | most common opening | rows with it |", "|---|---|---|---|---|",
            *[f"| {k} | {stats['by_task_type'].get(k, 0)} | {v['unique_queries']} | {v['top_opening']} | "
              f"{v['top_opening_count']} |" for k, v in stats["query_diversity"].items()], "",
        ]
    if stats["language_check"]:
        lines += [
            "Language check (every checked attempt, kept or rejected; bitext counts each side under its language):",
            "", "| asked language | in it | in another | unknown |", "|---|---|---|---|",
            *[f"| {k} | {v['matched']} | {v['mismatched']} | {v['unknown']} |" for k, v in stats["language_check"].items()],
            "",
        ]
    return "\n".join(lines)
