"""Parse and validate generator output, without eval: strict JSON, exact keys, bounded non-empty strings.

Every failure raises `Rejected(code, detail)`; the pipeline stores the code and detail with the raw
output in `rejects/`. Codes:

    engine_error       the engine or endpoint failed for this row (HTTP status, timeout, refused or closed
                       connection, an unreadable response); the detail says which
    truncated          generation stopped at max_tokens (the JSON is cut off), or a field reached the
                       schema's maxLength (the grammar forced the string closed: not a finished text)
    not_json           not parseable as JSON (prose around the object, nesting thousands deep, a
                       number of thousands of digits)
    not_object         valid JSON but not an object
    missing_keys / unexpected_keys     key set differs from the task type's fields
    not_string         a field is not a string
    empty_field / too_short / too_long a field's length is outside its role's bounds
    no_text            a field has no letter in any script (a label may also be a digit)
    copies_query       the positive (or negative) is the query again
    negative_equals_positive           the hard negative is the positive again
    duplicate          an identical (normalised) example already exists
    wrong_language     a text came back in another language than asked (synth.language; generate.language_check)
    contaminated       a text overlaps an evaluation task's text (synth.decontaminate; the pass before training)
    bad_brainstorm     step-1 output had no usable task definitions
"""

from __future__ import annotations

import json
import re
from typing import Any

from synthembed.synth.schema import normalize_text
from synthembed.synth.tasks import SPECS, field_roles
from synthembed.synth.transport import loads_bounded

REASONS = (
    "engine_error", "truncated", "not_json", "not_object", "missing_keys", "unexpected_keys", "not_string",
    "empty_field", "too_short", "too_long", "no_text", "copies_query", "negative_equals_positive", "duplicate", "bad_brainstorm",
    "wrong_language", "contaminated",
)

# A JSON object wrapped in a Markdown code fence (GPT-style answers); anything else around it is prose.
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


class Rejected(ValueError):
    def __init__(self, code: str, detail: str = ""):
        assert code in REASONS, code
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


def parse_json_object(raw: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    """Strict JSON object from `raw`; a Markdown code fence is the only wrapping tolerated."""
    if raw is None or not raw.strip():
        raise Rejected("not_json", "empty output")
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        # strict=False only admits raw control characters (newlines, tabs) inside strings, which small
        # models under a grammar emit; the structure must still be exactly one JSON object.
        obj = loads_bounded(text)
    except json.JSONDecodeError as err:
        if finish_reason == "length":
            raise Rejected("truncated", f"stopped at max_tokens ({err.msg} at char {err.pos})") from None
        try:  # tell "prose around a valid object" apart from "not JSON at all"
            start = text.index("{")
            json.JSONDecoder(strict=False).raw_decode(text[start:])
            raise Rejected("not_json", "extra text around the JSON object") from None
        except (ValueError, RecursionError):
            pass
        raise Rejected("not_json", f"{err.msg} at char {err.pos}") from None
    except ValueError as err:  # nested too deep, or an integer of thousands of digits
        raise Rejected("not_json", str(err)[:200]) from None
    if not isinstance(obj, dict):
        raise Rejected("not_object", f"got a JSON {type(obj).__name__}")
    return obj


def validate_example(task_type: str, obj: dict[str, Any], placeholders: dict[str, Any],
                     bounds: dict[str, tuple[int, int]]) -> dict[str, str | None]:
    """Check one parsed example; return {query, positive, hard_negative} (stripped)."""
    spec = SPECS[task_type]
    missing = [f for f in spec.fields if f not in obj]
    if missing:
        raise Rejected("missing_keys", f"{missing} (expected {list(spec.fields)})")
    extra = [k for k in obj if k not in spec.fields]
    if extra:
        raise Rejected("unexpected_keys", f"{extra} (expected {list(spec.fields)})")
    roles = field_roles(task_type, placeholders)
    values: dict[str, str] = {}
    for f in spec.fields:
        v = obj[f]
        if not isinstance(v, str):
            raise Rejected("not_string", f"{f} is a {type(v).__name__}")
        lo, hi = bounds[roles[f]]
        if len(v) == hi:  # guided decoding closes a string at maxLength: the text was cut, not finished
            raise Rejected("truncated", f"{f} reached the schema's maxLength ({hi} chars)")
        v = v.strip()
        if not v:
            raise Rejected("empty_field", f)
        if len(v) < lo:
            raise Rejected("too_short", f"{f} has {len(v)} chars, needs >= {lo}")
        if len(v) > hi:
            raise Rejected("too_long", f"{f} has {len(v)} chars, allowed <= {hi}")
        # Bound by content, not ASCII length: one CJK character is a word, and a label may be a digit.
        has_text = any(ch.isalnum() for ch in v) if f in spec.label_fields else any(ch.isalpha() for ch in v)
        if not has_text:
            raise Rejected("no_text", f"{f}={v[:40]!r} has no words")
        values[f] = v
    q = normalize_text(values[spec.query])
    p = normalize_text(values[spec.positive])
    n = normalize_text(values[spec.hard_negative]) if spec.hard_negative else None
    if p == q:
        raise Rejected("copies_query", f"{spec.positive} equals {spec.query}")
    if n is not None and n == q:
        raise Rejected("copies_query", f"{spec.hard_negative} equals {spec.query}")
    if n is not None and n == p:
        raise Rejected("negative_equals_positive", f"{spec.hard_negative} equals {spec.positive}")
    return {
        "query": values[spec.query],
        "positive": values[spec.positive],
        "hard_negative": values[spec.hard_negative] if spec.hard_negative else None,
    }


def parse_brainstorm(raw: str | None, finish_reason: str | None = None, max_chars: int = 300) -> list[str]:
    """Task definitions from step 1: {"tasks": [...]} (or a bare JSON list); unique, non-empty strings."""
    if raw is not None and raw.strip().startswith("["):
        try:
            items = loads_bounded(raw)
        except json.JSONDecodeError as err:
            raise Rejected("truncated" if finish_reason == "length" else "not_json", err.msg) from None
        except ValueError as err:
            raise Rejected("not_json", str(err)[:200]) from None
    else:
        obj = parse_json_object(raw, finish_reason)
        if set(obj) != {"tasks"}:
            raise Rejected("missing_keys" if "tasks" not in obj else "unexpected_keys", f"got keys {sorted(obj)}")
        items = obj["tasks"]
    if not isinstance(items, list):
        raise Rejected("bad_brainstorm", f"tasks is a {type(items).__name__}, expected a list")
    seen, tasks = set(), []
    for item in items:
        if not isinstance(item, str):
            continue
        t = " ".join(item.split())
        key = normalize_text(t)
        if len(key) < 10 or len(t) > max_chars or key in seen:
            continue
        seen.add(key)
        tasks.append(t)
    if not tasks:
        raise Rejected("bad_brainstorm", f"no usable task among {len(items)} items")
    return tasks
