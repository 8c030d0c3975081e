"""Turn a validated request into token ids, enforcing the configured guard rails.

Text goes through `Embedder.tokenize` (the project's one formatting/EOS rule), so a served query is
tokenized exactly as in training and evaluation. Over-long inputs are either cut (`truncate: end`, the
same cut `Embedder.tokenize` makes) or refused (`truncate: reject`); `usage` counts the ids actually embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synthembed.serve.errors import APIError, bad_request


@dataclass
class Tokenized:
    ids: list[list[int]]
    truncated: int  # inputs that were cut to the per-item cap

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def parse_input(raw: Any, max_items: int) -> tuple[list[str] | None, list[list[int]] | None]:
    """Return (texts, None) or (None, token_id_lists); raise APIError naming the bad item."""
    if isinstance(raw, str):
        if not raw:
            raise bad_request("input must not be an empty string", "input", "empty_input")
        return [raw], None
    if not isinstance(raw, list):
        raise bad_request(
            f"input must be a string, a list of strings or a list of token-id lists, got {type(raw).__name__}",
            "input", "invalid_type",
        )
    if not raw:
        raise bad_request("input must not be an empty list", "input", "empty_input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return None, [raw]  # one text given as token ids: one item, however many ids (OpenAI allows 8192)
    if len(raw) > max_items:
        raise APIError(
            413, f"input has {len(raw)} items; this server takes at most {max_items} per request: split the list",
            "input", "too_many_items",
        )
    if isinstance(raw[0], list):
        for i, seq in enumerate(raw):
            if not isinstance(seq, list) or not seq:
                raise bad_request(f"input[{i}] must be a non-empty list of token ids", f"input[{i}]", "invalid_type")
            for j, tok in enumerate(seq):
                if not isinstance(tok, int) or isinstance(tok, bool):
                    raise bad_request(
                        f"input[{i}][{j}] must be an integer token id, got {type(tok).__name__}",
                        f"input[{i}][{j}]", "invalid_type",
                    )
        return None, raw
    for i, text in enumerate(raw):
        if not isinstance(text, str):
            raise bad_request(
                f"input[{i}] must be a string, got {type(text).__name__}; mixed lists are not accepted",
                f"input[{i}]", "invalid_type",
            )
        if not text:
            raise bad_request(f"input[{i}] must not be an empty string", f"input[{i}]", "empty_input")
    return raw, None


def resolve_instruction(input_type: str | None, instruction: str | None, default: str | None) -> str | None:
    """Queries get an instruction ("Instruct: ...\\nQuery: ..."); documents are embedded raw."""
    if instruction is not None and not instruction.strip():
        raise bad_request("instruction must not be blank; omit it for documents", "instruction")
    if input_type == "document":
        if instruction is not None:
            raise bad_request("input_type 'document' takes no instruction (only queries are instructed)", "instruction")
        return None
    if input_type == "query":
        if instruction is None and default is None:
            raise bad_request(
                "input_type 'query' needs an instruction (e.g. 'Given a question, retrieve passages that answer it')",
                "instruction", "missing_instruction",
            )
        return instruction if instruction is not None else default
    return instruction  # no input_type: an instruction alone means query, none means document


# No tokenizer averages this many characters per token on real text: a longer string is over the cap
# for sure, and is cut by characters before tokenizing (a 2 MB string would hold the tokenizer lock).
CHARS_PER_TOKEN = 64


def tokenize_texts(embedder, texts: list[str], instruction: str | None, cap: int, truncate: str) -> Tokenized:
    """`Embedder.tokenize` with a per-item cap of `cap` tokens (EOS included)."""
    chars = cap * CHARS_PER_TOKEN
    too_long = [i for i, t in enumerate(texts) if len(t) > chars]
    if too_long and truncate == "reject":
        i = too_long[0]
        raise bad_request(f"input[{i}] is longer than {cap} tokens ({len(texts[i])} characters); shorten it",
                          f"input[{i}]", "input_too_long")
    texts = [t[:chars] for t in texts]
    # One token of headroom tells an input that fits from one that was cut; only the cut ones are
    # tokenized again at the real cap, so the final ids are exactly what Embedder.tokenize(cap) gives.
    ids = embedder.tokenize(texts, instruction=instruction, max_length=cap + 1)
    long = [i for i, x in enumerate(ids) if len(x) > cap]
    if long and truncate == "reject":
        i = long[0]
        raise bad_request(
            f"input[{i}] is longer than {cap} tokens; shorten it, or ask the operator for limits.truncate=end",
            f"input[{i}]", "input_too_long",
        )
    if long:
        redone = embedder.tokenize([texts[i] for i in long], instruction=instruction, max_length=cap)
        for i, seq in zip(long, redone):
            ids[i] = seq
    return Tokenized(ids, len(long))


def prepare_token_ids(seqs: list[list[int]], vocab_size: int, eos_id: int, cap: int, truncate: str) -> Tokenized:
    """Client-tokenized input: ids must lie in [0, vocab); EOS is appended once, as Embedder.tokenize does."""
    out, cut = [], 0
    for i, seq in enumerate(seqs):
        for j, tok in enumerate(seq):
            if not 0 <= tok < vocab_size:
                raise bad_request(
                    f"input[{i}][{j}] = {tok} is not a token id of this model (vocabulary size {vocab_size})",
                    f"input[{i}][{j}]", "invalid_token_id",
                )
        body = list(seq)
        while body and body[-1] == eos_id:
            body.pop()
        if len(body) + 1 > cap:
            if truncate == "reject":
                raise bad_request(
                    f"input[{i}] is longer than {cap} tokens (EOS included); shorten it", f"input[{i}]", "input_too_long"
                )
            body, cut = body[: cap - 1], cut + 1
        out.append(body + [eos_id])
    return Tokenized(out, cut)
