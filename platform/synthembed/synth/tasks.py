"""The six task types of the paper, one record each (`SPECS`): fields, their roles, placeholder value sets,
the brainstorm and example prompts, the fixed instruction of the one-step types, and label fields.
Prompts (`prompts.py`), schemas and validation (`parse.py`) are derived from these records.

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

# Paper §4.1 / Figure 2: k examples per type out of ~507k.
PAPER_TASK_MIX: dict[str, float] = {
    "short_long": 0.329, "long_short": 0.241, "sts": 0.195, "bitext": 0.176, "long_long": 0.034, "short_short": 0.026,
}

@dataclass(frozen=True)
class Brainstorm:
    """Step 1 of an asymmetric type: what kind of tasks to brainstorm, two examples, one guideline."""

    kind: str
    examples: tuple[str, str]
    guideline: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task type; prompts, schemas and validation are all derived from it.

    `prompt` is the step-2 template, formatted with the row's placeholders plus `task`, `language`,
    `src_language`, `tgt_language` and `keys` (the quoted field names).
    """

    name: str
    fields: tuple[str, ...]            # keys of the JSON object the generator must return, in order
    roles: dict[str, str]              # field -> "short" | "long" (empty: every field follows the unit)
    query: str
    positive: str
    hard_negative: str | None
    prompt: str
    placeholders: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    brainstorm: Brainstorm | None = None        # None: one step, with `instruction` as the task
    instruction: str | None = None
    label_fields: frozenset[str] = frozenset()  # class labels: one character (a digit, a CJK word) is whole


_UNIT_VALUES = {"unit": ("sentence", "phrase", "passage"), "high_score": (4, 4.5, 5)}
_SYMMETRIC_DIFFICULTY = ("elementary school", "high school", "college")

# Topics for the symmetric types' prompts when `generate.symmetric_topics` is on (the paper's prompts have
# none). Everyday and specialist subjects alike, so the sentences spread over vocabularies; written in English
# and used as is in every language (the prompt asks for the texts in the row's language).
SYMMETRIC_TOPICS: tuple[str, ...] = (
    "cooking at home", "a train journey", "gardening", "a football match", "the weather", "a job interview",
    "buying a used car", "a visit to the doctor", "school homework", "a birthday party", "moving house",
    "a museum exhibition", "online shopping", "a broken phone", "public transport strikes", "a wedding",
    "learning a language", "a power outage", "a hiking trip", "renting a flat", "a bank loan", "pet care",
    "a music festival", "a court case", "climate change", "a local election", "a new smartphone", "vaccines",
    "a restaurant review", "space exploration", "ancient history", "a chess tournament", "software bugs",
    "a hospital stay", "farming", "a film premiere", "stock markets", "a traffic accident", "recycling",
    "a library", "a marathon", "volcanoes", "a tax return", "a cooking competition", "a flight delay",
    "a startup company", "bird watching", "a family dinner", "a fire in a factory", "a new law", "painting",
    "a hotel complaint", "a science experiment", "a lost wallet", "the ocean", "a university lecture",
    "electric cars", "a bakery", "a theatre play", "a snowstorm", "a dentist appointment", "a football transfer",
    "an insurance claim", "a robot", "a village festival", "a protest march", "a medical study", "coffee",
    "a fishing trip", "a computer virus", "a wildlife park", "a bicycle repair", "a pop singer", "a bridge",
    "a summer holiday", "a customer service call", "an earthquake", "a chemistry class", "a book club",
    "a car factory", "a police investigation", "a yoga class", "a mountain village", "a wine harvest",
)

SPECS: dict[str, TaskSpec] = {
    "short_long": TaskSpec(
        "short_long", ("user_query", "positive_document", "hard_negative_document"),
        {"user_query": "short", "positive_document": "long", "hard_negative_document": "long"},
        "user_query", "positive_document", "hard_negative_document",
        prompt=(
            "You have been given a retrieval task: {task}\n"
            "Write one example for it as a JSON object with the keys {keys}.\n"
            '- "user_query": a {query_type} query of {query_length}, {clarity} to read.\n'
            '- "positive_document": a document of at least {num_words} words that answers the query well.\n'
            '- "hard_negative_document": a document about as long as the positive document, with some useful '
            "information, that answers the query less well or less fully than the positive document.\n"
            "Write the documents on their own, without copying the query word for word; parts of the positive "
            "document may wander off-topic. Never explain why a document is or is not relevant.\n"
            "Understanding the documents should take {difficulty} level knowledge.\n"
            "Write the query and the documents in {language}."
        ),
        placeholders={
            "query_type": ("extremely long-tail", "long-tail", "common"),
            "query_length": ("less than 5 words", "5 to 15 words", "at least 10 words"),
            "clarity": ("clear", "understandable with some effort", "ambiguous"),
            "num_words": (50, 100, 200, 300, 400, 500),
            "difficulty": ("high school", "college", "PhD"),
        },
        brainstorm=Brainstorm(
            "text retrieval tasks",
            ("Given a scientific claim, retrieve documents that support or refute it.",
             "Given a short keyword query about the weather, retrieve relevant web pages."),
            "Say what the query is and what the wanted documents are. Each task should cover a broad "
            "range of queries rather than one narrow question.",
        ),
    ),
    "long_short": TaskSpec(
        "long_short", ("input_text", "label", "misleading_label"),
        {"input_text": "long", "label": "short", "misleading_label": "short"},
        "input_text", "label", "misleading_label",
        prompt=(
            "You have been given a text classification task: {task}\n"
            "Write one example for it as a JSON object with the keys {keys}.\n"
            '- "input_text": a text of {num_words} words, {clarity} to read, needing {difficulty} '
            "level knowledge.\n"
            '- "label": the correct label for the text under this task.\n'
            '- "misleading_label": a label that is valid for this task but fits the text worse than "label", '
            'of about the same length as "label".\n'
            'Do not mention the values of "label" or "misleading_label" in "input_text".\n'
            "Write the text and the labels in {language}."
        ),
        placeholders={
            "num_words": ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200"),
            "difficulty": ("high school", "college", "PhD"),
            "clarity": ("clear", "understandable with some effort", "ambiguous"),
        },
        brainstorm=Brainstorm(
            "text classification tasks",
            ("Classify customer support tickets by how severe the complaint is.",
             "Decide the sentiment of a product review."),
            "Cover many different domains and kinds of classification.",
        ),
        label_fields=frozenset({"label", "misleading_label"}),
    ),
    "short_short": TaskSpec(
        "short_short", ("input", "positive_document"),
        {"input": "short", "positive_document": "short"},
        "input", "positive_document", None,
        prompt=(
            "You have been given a text matching task: {task}\n"
            "Write one example for it as a JSON object with the keys {keys}.\n"
            '- "input": a very short query (a phrase, or one or two sentences).\n'
            '- "positive_document": a very short text that matches the input under this task.\n'
            "The two texts should be written independently and share few words.\n"
            "Write both in {language}."
        ),
        brainstorm=Brainstorm(
            "text matching tasks in which both the query and the matching document are very short "
            "(a phrase, or one or two sentences)",
            ("Given the title of a research paper, find titles of papers that cite it.",
             "Given a word, find its dictionary definition."),
            "Keep both sides short.",
        ),
    ),
    "long_long": TaskSpec(
        "long_long", ("input", "positive_document"),
        {"input": "long", "positive_document": "long"},
        "input", "positive_document", None,
        prompt=(
            "You have been given a text matching task: {task}\n"
            "Write one example for it as a JSON object with the keys {keys}.\n"
            '- "input": a long document of {num_words} words.\n'
            '- "positive_document": a long document of {num_words} words that matches the input under this task.\n'
            "The two documents should be written independently and share few words.\n"
            "Write both in {language}."
        ),
        placeholders={"num_words": ("at least 300",)},  # fixed in the paper's Table 11
        brainstorm=Brainstorm(
            "text matching tasks in which the query is a long document",
            ("Given an essay that argues one side of a debate, find an essay that argues the other side.",
             "Given a business proposal, find documents describing competing strategies in the same industry."),
            "Both the query and the matching document should be long texts.",
        ),
    ),
    "sts": TaskSpec(
        "sts", ("S1", "S2", "S3"), {},  # roles follow the unit
        "S1", "S2", "S3",
        prompt=(
            "Write three {unit}s for a semantic textual similarity task, as a JSON object with the keys {keys}.\n"
            '- "S1": a {unit}.\n'
            '- "S2": a {unit} whose similarity to S1 scores {high_score} on a scale from 1 to 5.\n'
            '- "S3": a {unit} about as long as S2 whose similarity to S1 scores {low_score} on the same scale.\n'
            "The three {unit}s should share some words. They should need {difficulty} level knowledge.\n"
            "Write all three in {language}."
        ),
        placeholders={**_UNIT_VALUES, "low_score": (2.5, 3, 3.5), "difficulty": _SYMMETRIC_DIFFICULTY},
        instruction="Retrieve semantically similar text.",
    ),
    "bitext": TaskSpec(
        "bitext", ("S1", "S2", "S3"), {},
        "S1", "S2", "S3",
        prompt=(
            "Write a translation example as a JSON object with the keys {keys}.\n"
            '- "S1": a {unit} in {src_language}.\n'
            '- "S2": a translation of S1 into {tgt_language} that deserves a score of {high_score} out of 5.\n'
            '- "S3": a translation of S1 into {tgt_language}, about as long as S2, that deserves only '
            "{low_score} out of 5: fluent and grammatical, but with a wrong keyword or number, missing "
            "information, or added information.\n"
            "The texts should need {difficulty} level knowledge."
        ),
        # low_score differs from STS on purpose (paper, Table 13)
        placeholders={**_UNIT_VALUES, "low_score": (1.5, 2, 2.5), "difficulty": _SYMMETRIC_DIFFICULTY},
        instruction="Retrieve parallel sentences.",
    ),
}
ASYMMETRIC: tuple[str, ...] = tuple(t for t, spec in SPECS.items() if spec.brainstorm is not None)


def field_roles(task_type: str, placeholders: dict[str, Any]) -> dict[str, str]:
    spec = SPECS[task_type]
    if not spec.roles:  # symmetric types: a passage is long, a sentence or phrase is short
        role = "long" if placeholders.get("unit", "sentence") == "passage" else "short"
        return {f: role for f in spec.fields}
    return dict(spec.roles)


def sample_placeholders(task_type: str, rng: random.Random) -> dict[str, Any]:
    """One value per placeholder, uniformly from the paper's value set (languages are sampled apart)."""
    return {name: rng.choice(values) for name, values in SPECS[task_type].placeholders.items()}


def task_instruction(task_type: str, task: str | None) -> str:
    """The task definition stored with the example (used as "Instruct: ..." in training)."""
    spec = SPECS[task_type]
    if spec.instruction is not None:
        return spec.instruction
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
