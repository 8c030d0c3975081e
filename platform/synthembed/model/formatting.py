"""How a text becomes the string the embedder reads.

This is the only copy of the formatting rule in the project: training, evaluation and serving all
call `format_text`, so a query is embedded the same way everywhere. Query side:
"Instruct: {instruction}\\nQuery: {text}"; document side (no instruction): the raw text.
"""

from __future__ import annotations

QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"


def format_text(text: str, instruction: str | None = None) -> str:
    """Return `text` wrapped as a query when an instruction is given, else unchanged."""
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r:.80}")
    if instruction is None or not instruction.strip():
        return text
    return QUERY_TEMPLATE.format(instruction=instruction.strip(), text=text)


def format_texts(texts: list[str], instruction: str | None | list[str | None] = None) -> list[str]:
    """Format many texts with one shared instruction, or one instruction per text."""
    if isinstance(instruction, list):
        if len(instruction) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(instruction)} instructions")
        return [format_text(t, i) for t, i in zip(texts, instruction)]
    return [format_text(t, instruction) for t in texts]
