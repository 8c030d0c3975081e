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

PROMPT_VERSION = "v3"  # v2: hard negatives asked for the positive's length (no length shortcut);
# v3: a symmetric row's topic line says the topic does not set the language

SYSTEM_PROMPT = (
    "You create training data for text embedding models. You always answer with one JSON object and nothing else."
)

def brainstorm_messages(task_type: str, n_tasks: int) -> list[dict[str, str]]:
    bs = SPECS[task_type].brainstorm
    ex = "\n".join(f"- {e}" for e in bs.examples)
    user = (
        f"Brainstorm {n_tasks} distinct {bs.kind}. Describe each task in one sentence.\n"
        f"Two examples of such tasks:\n{ex}\n"
        f"{bs.guideline}\n"
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
    """The step-2 (or single-step) prompt for one row: the task type's template, filled in."""
    spec = SPECS[task_type]
    body = spec.prompt.format(**placeholders, task=task, language=language, src_language=src_language,
                              tgt_language=tgt_language, keys=_keys_line(spec.fields))
    if task and spec.brainstorm is None:
        # A symmetric type has no task definition; what it gets is a topic (generate.symmetric_topics). The
        # topics are English, and without the second sentence Qwen2.5-Coder-1.5B wrote a third of the bitext
        # sources in English (38 of 121 rows of the quality plan, against 20 of 122 without topics).
        languages = (f"S1 in {src_language} and S2 and S3 in {tgt_language}" if task_type == "bitext"
                     else f"all three in {language}")
        body += (f"\nWrite about this topic: {task}. The topic is given in English only to name a subject: "
                 f"write {languages}.")
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
