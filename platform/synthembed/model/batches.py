"""How token sequences are grouped into forward passes, written once for encoding and serving.

A forward pass costs (items x longest item) padded tokens, so that is what a token budget counts:

    padded_tokens(batch) = len(batch) * max(len(ids) for ids in batch)

`length_sorted_batches` orders texts longest first (similar lengths share a batch, and an out-of-memory
shows on the first batch, not the last) and closes a batch at `max_items` texts or before its padded size
would pass `max_tokens`, whichever comes first. On CPU a fixed count of short texts is a small matmul: with
a budget, 128-token documents still go 16 at a time while 30-token queries go 64 at a time.

`shared_prefix_length` finds the tokens every sequence of a batch starts with (BOS and the instruction,
for a batch of queries), which inference computes once per batch instead of once per text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def padded_tokens(items: Sequence[Sequence[int]]) -> int:
    """Tokens a batch occupies once padded to its longest item."""
    return len(items) * max((len(x) for x in items), default=0)


def length_sorted_batches(lengths: Sequence[int], max_items: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices into `lengths`, longest first, cut into batches of <= max_items and <= max_tokens padded tokens.

    A single item longer than `max_tokens` gets a batch of its own (it cannot be split)."""
    order = np.argsort([-n for n in lengths], kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = max(1, lengths[order[start]])  # longest first: the first item sets the batch's width
        size = max_items if max_tokens is None else max(1, min(max_items, max_tokens // width))
        batches.append(order[start : start + size])
        start += size
    return batches


def shared_prefix_length(items: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all `items` share, leaving each at least its last token (the pooled EOS).

    Found on token ids, not on the instruction string: a tokenizer may merge the instruction's last
    character with the text's first, so only the ids say what is really shared."""
    if not items:
        return 0
    first = items[0]
    shared = min(len(x) for x in items) - 1
    for seq in items[1:]:
        n = 0
        while n < shared and seq[n] == first[n]:
            n += 1
        shared = n
    return max(shared, 0)
