"""Prompt templates (our own wording of the paper's Tables 8-13) and the JSON schemas for guided decoding.

Two steps for the asymmetric types: `brainstorm_messages` asks for a list of task definitions,
`example_messages` asks for one JSON example of one task. STS and bitext use a single step with the
fixed task definitions. Each prompt ends by asking for a JSON object only; the schema from
`example_schema` / `brainstorm_schema` is sent with the request so engines that support guided
decoding (vLLM, llama.cpp) can only produce that object. String properties carry `minLength` and
`maxLength` so a small model's output ends inside `max_tokens`.

Bump PROMPT_VERSION whenever a template or schema changes: it is stored with every row.
"""

from __future__ import annotations

from typing import Any

from synthembed.synth.tasks import SPECS, field_roles

PROMPT_VERSION = "v2"  # v2: hard negatives asked for the positive's length (no length shortcut)

SYSTEM_PROMPT = (
    "You create training data for text embedding models. You always answer with one JSON object and nothing else."
)

# Step 1: what kind of tasks to brainstorm, two illustrative tasks, and a guideline (paper Figure 1 / Tables 8-11).
BRAINSTORM: dict[str, dict[str, Any]] = {
    "short_long": {
        "kind": "text retrieval tasks",
        "examples": (
            "Given a scientific claim, retrieve documents that support or refute it.",
            "Given a short keyword query about the weather, retrieve relevant web pages.",
        ),
        "guideline": "Say what the query is and what the wanted documents are. Each task should cover a broad "
        "range of queries rather than one narrow question.",
    },
    "long_short": {
        "kind": "text classification tasks",
        "examples": (
            "Classify customer support tickets by how severe the complaint is.",
            "Decide the sentiment of a product review.",
        ),
        "guideline": "Cover many different domains and kinds of classification.",
    },
    "short_short": {
        "kind": "text matching tasks in which both the query and the matching document are very short "
        "(a phrase, or one or two sentences)",
        "examples": (
            "Given the title of a research paper, find titles of papers that cite it.",
            "Given a word, find its dictionary definition.",
        ),
        "guideline": "Keep both sides short.",
    },
    "long_long": {
        "kind": "text matching tasks in which the query is a long document",
        "examples": (
            "Given an essay that argues one side of a debate, find an essay that argues the other side.",
            "Given a business proposal, find documents describing competing strategies in the same industry.",
        ),
        "guideline": "Both the query and the matching document should be long texts.",
    },
}


def brainstorm_messages(task_type: str, n_tasks: int) -> list[dict[str, str]]:
    spec = BRAINSTORM[task_type]
    ex = "\n".join(f"- {e}" for e in spec["examples"])
    user = (
        f"Brainstorm {n_tasks} distinct {spec['kind']}. Describe each task in one sentence.\n"
        f"Two examples of such tasks:\n{ex}\n"
        f"{spec['guideline']}\n"
        f'Answer with a JSON object of the form {{"tasks": ["...", "..."]}} holding exactly {n_tasks} new tasks. '
        "Do not explain anything. Be creative!"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def brainstorm_schema(n_tasks: int, max_chars: int = 160) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "items": {"type": "string", "minLength": 10, "maxLength": max_chars},
                "minItems": n_tasks,
                "maxItems": n_tasks,
            }
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }


def _keys_line(fields: tuple[str, ...]) -> str:
    return ", ".join(f'"{f}"' for f in fields)


def example_messages(task_type: str, task: str | None, language: str, placeholders: dict[str, Any],
                     src_language: str | None = None, tgt_language: str | None = None) -> list[dict[str, str]]:
    """The step-2 (or single-step) prompt for one row."""
    p = placeholders
    keys = _keys_line(SPECS[task_type].fields)
    if task_type == "short_long":
        body = (
            f"You have been given a retrieval task: {task}\n"
            f"Write one example for it as a JSON object with the keys {keys}.\n"
            f'- "user_query": a {p["query_type"]} query of {p["query_length"]}, {p["clarity"]} to read.\n'
            f'- "positive_document": a document of at least {p["num_words"]} words that answers the query well.\n'
            '- "hard_negative_document": a document about as long as the positive document, with some useful '
            "information, that answers the query less well or less fully than the positive document.\n"
            "Write the documents on their own, without copying the query word for word; parts of the positive "
            "document may wander off-topic. Never explain why a document is or is not relevant.\n"
            f"Understanding the documents should take {p['difficulty']} level knowledge.\n"
            f"Write the query and the documents in {language}."
        )
    elif task_type == "long_short":
        body = (
            f"You have been given a text classification task: {task}\n"
            f"Write one example for it as a JSON object with the keys {keys}.\n"
            f'- "input_text": a text of {p["num_words"]} words, {p["clarity"]} to read, needing {p["difficulty"]} '
            "level knowledge.\n"
            '- "label": the correct label for the text under this task.\n'
            '- "misleading_label": a label that is valid for this task but fits the text worse than "label", '
            'of about the same length as "label".\n'
            'Do not mention the values of "label" or "misleading_label" in "input_text".\n'
            f"Write the text and the labels in {language}."
        )
    elif task_type == "short_short":
        body = (
            f"You have been given a text matching task: {task}\n"
            f"Write one example for it as a JSON object with the keys {keys}.\n"
            '- "input": a very short query (a phrase, or one or two sentences).\n'
            '- "positive_document": a very short text that matches the input under this task.\n'
            "The two texts should be written independently and share few words.\n"
            f"Write both in {language}."
        )
    elif task_type == "long_long":
        body = (
            f"You have been given a text matching task: {task}\n"
            f"Write one example for it as a JSON object with the keys {keys}.\n"
            f'- "input": a long document of {p["num_words"]} words.\n'
            f'- "positive_document": a long document of {p["num_words"]} words that matches the input under this task.\n'
            "The two documents should be written independently and share few words.\n"
            f"Write both in {language}."
        )
    elif task_type == "sts":
        unit = p["unit"]
        body = (
            f"Write three {unit}s for a semantic textual similarity task, as a JSON object with the keys {keys}.\n"
            f'- "S1": a {unit}.\n'
            f'- "S2": a {unit} whose similarity to S1 scores {p["high_score"]} on a scale from 1 to 5.\n'
            f'- "S3": a {unit} about as long as S2 whose similarity to S1 scores {p["low_score"]} on the same scale.\n'
            f"The three {unit}s should share some words. They should need {p['difficulty']} level knowledge.\n"
            f"Write all three in {language}."
        )
    elif task_type == "bitext":
        unit = p["unit"]
        body = (
            f"Write a translation example as a JSON object with the keys {keys}.\n"
            f'- "S1": a {unit} in {src_language}.\n'
            f'- "S2": a translation of S1 into {tgt_language} that deserves a score of {p["high_score"]} out of 5.\n'
            f'- "S3": a translation of S1 into {tgt_language}, about as long as S2, that deserves only '
            f'{p["low_score"]} out of 5: fluent and grammatical, but with a wrong keyword or number, missing '
            "information, or added information.\n"
            f"The texts should need {p['difficulty']} level knowledge."
        )
    else:
        raise ValueError(f"unknown task type {task_type!r}")
    user = body + "\nAnswer with the JSON object only, with no other text. Be creative!"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def example_schema(task_type: str, placeholders: dict[str, Any], bounds: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """JSON schema of one example: the task's keys, all required strings with length bounds per role.

    `bounds` maps a role ("short", "long") to (min_chars, max_chars).
    """
    roles = field_roles(task_type, placeholders)
    props = {}
    for f in SPECS[task_type].fields:
        lo, hi = bounds[roles[f]]
        props[f] = {"type": "string", "minLength": lo, "maxLength": hi}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
