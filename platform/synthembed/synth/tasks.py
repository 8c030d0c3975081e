"""The six task types of the paper: output fields, placeholder value sets, and per-row sampling.

| type        | group      | step(s)               | query field    | positive field      | hard negative field      |
|-------------|------------|-----------------------|----------------|---------------------|--------------------------|
| short_long  | asymmetric | brainstorm + example  | user_query     | positive_document   | hard_negative_document   |
| long_short  | asymmetric | brainstorm + example  | input_text     | label               | misleading_label         |
| short_short | asymmetric | brainstorm + example  | input          | positive_document   | (none)                   |
| long_long   | asymmetric | brainstorm + example  | input          | positive_document   | (none)                   |
| sts         | symmetric  | one step, fixed task  | S1             | S2                  | S3                       |
| bitext      | symmetric  | one step, fixed task  | S1 (src lang)  | S2 (tgt lang)       | S3 (flawed translation)  |

long_short is the paper's text-classification group (its prompt asks for input_text / label /
misleading_label). Value sets follow the captions of the paper's Tables 8-13; note that bitext's
low_score set (1.5, 2, 2.5) differs from STS's (2.5, 3, 3.5).

Every field has a length role, `short` or `long`, that picks the character bounds used in the JSON
schema (guided decoding) and in validation (`LengthBounds`). STS and bitext fields are `long` when the
sampled unit is a passage, `short` otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

TASK_TYPES: tuple[str, ...] = ("short_long", "long_short", "short_short", "long_long", "sts", "bitext")
ASYMMETRIC: tuple[str, ...] = ("short_long", "long_short", "short_short", "long_long")

# Paper §4.1 / Figure 2: k examples per type out of ~507k.
PAPER_TASK_MIX: dict[str, float] = {
    "short_long": 0.329, "long_short": 0.241, "sts": 0.195, "bitext": 0.176, "long_long": 0.034, "short_short": 0.026,
}

# Fields that hold a class label: one character (a digit, a CJK word) is a whole label.
LABEL_FIELDS = frozenset({"label", "misleading_label"})

STS_INSTRUCTION = "Retrieve semantically similar text."
BITEXT_INSTRUCTION = "Retrieve parallel sentences."


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fields: tuple[str, ...]            # keys of the JSON object the generator must return, in order
    roles: dict[str, str]              # field -> "short" | "long" (may depend on the unit placeholder)
    query: str
    positive: str
    hard_negative: str | None
    placeholders: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def _unit_role(unit: str) -> str:
    return "long" if unit == "passage" else "short"


SPECS: dict[str, TaskSpec] = {
    "short_long": TaskSpec(
        "short_long", ("user_query", "positive_document", "hard_negative_document"),
        {"user_query": "short", "positive_document": "long", "hard_negative_document": "long"},
        "user_query", "positive_document", "hard_negative_document",
        {
            "query_type": ("extremely long-tail", "long-tail", "common"),
            "query_length": ("less than 5 words", "5 to 15 words", "at least 10 words"),
            "clarity": ("clear", "understandable with some effort", "ambiguous"),
            "num_words": (50, 100, 200, 300, 400, 500),
            "difficulty": ("high school", "college", "PhD"),
        },
    ),
    "long_short": TaskSpec(
        "long_short", ("input_text", "label", "misleading_label"),
        {"input_text": "long", "label": "short", "misleading_label": "short"},
        "input_text", "label", "misleading_label",
        {
            "num_words": ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200"),
            "difficulty": ("high school", "college", "PhD"),
            "clarity": ("clear", "understandable with some effort", "ambiguous"),
        },
    ),
    "short_short": TaskSpec(
        "short_short", ("input", "positive_document"),
        {"input": "short", "positive_document": "short"},
        "input", "positive_document", None,
    ),
    "long_long": TaskSpec(
        "long_long", ("input", "positive_document"),
        {"input": "long", "positive_document": "long"},
        "input", "positive_document", None,
        {"num_words": ("at least 300",)},  # fixed in the paper's Table 11
    ),
    "sts": TaskSpec(
        "sts", ("S1", "S2", "S3"), {},  # roles follow the unit
        "S1", "S2", "S3",
        {
            "unit": ("sentence", "phrase", "passage"),
            "high_score": (4, 4.5, 5),
            "low_score": (2.5, 3, 3.5),
            "difficulty": ("elementary school", "high school", "college"),
        },
    ),
    "bitext": TaskSpec(
        "bitext", ("S1", "S2", "S3"), {},
        "S1", "S2", "S3",
        {
            "unit": ("sentence", "phrase", "passage"),
            "high_score": (4, 4.5, 5),
            "low_score": (1.5, 2, 2.5),  # differs from STS on purpose (paper, Table 13)
            "difficulty": ("elementary school", "high school", "college"),
        },
    ),
}


def field_roles(task_type: str, placeholders: dict[str, Any]) -> dict[str, str]:
    spec = SPECS[task_type]
    if task_type in ("sts", "bitext"):
        role = _unit_role(str(placeholders.get("unit", "sentence")))
        return {f: role for f in spec.fields}
    return dict(spec.roles)


def sample_placeholders(task_type: str, rng: random.Random) -> dict[str, Any]:
    """One value per placeholder, uniformly from the paper's value set (languages are sampled apart)."""
    return {name: rng.choice(values) for name, values in SPECS[task_type].placeholders.items()}


def instruction_for(task_type: str, task: str | None) -> str:
    """The task definition stored with the example (used as "Instruct: ..." in training)."""
    if task_type == "sts":
        return STS_INSTRUCTION
    if task_type == "bitext":
        return BITEXT_INSTRUCTION
    if not task:
        raise ValueError(f"{task_type} needs a brainstormed task definition")
    return task


def allocate_counts(total: int, mix: dict[str, float], min_per_type: int = 0) -> dict[str, int]:
    """Split `total` rows over task types in proportion to `mix` (largest remainder), exact and seed-free.

    `min_per_type` guarantees small runs still cover every type with a non-zero weight.
    """
    active = {t: w for t, w in mix.items() if w > 0}
    if not active:
        raise ValueError("generate.task_mix: at least one task type needs a weight > 0")
    if min_per_type * len(active) > total:
        raise ValueError(
            f"generate.num_examples={total} is smaller than min_per_type ({min_per_type}) x {len(active)} types"
        )
    counts = {t: min_per_type for t in active}
    left = total - min_per_type * len(active)
    wsum = sum(active.values())
    exact = {t: left * w / wsum for t, w in active.items()}
    for t in active:
        counts[t] += int(exact[t])
    rest = left - sum(int(v) for v in exact.values())
    for t in sorted(active, key=lambda t: (exact[t] - int(exact[t]), active[t]), reverse=True)[:rest]:
        counts[t] += 1
    return {t: counts.get(t, 0) for t in TASK_TYPES if counts.get(t, 0) > 0}
