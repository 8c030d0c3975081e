"""Decontamination: does a generated text overlap a text of the evaluation tasks? By n-gram overlap.

A generator (GPT-4, an open model) may have seen the benchmarks, and may write one of their sentences back;
training on it would inflate exactly the scores we report. Every generated text (`query`, `positive`,
`hard_negative`; the instruction is ours, not the model's content, and is excluded) is compared with every
text of the evaluation tasks (`EvalIndex`); a row with any overlapping text is removed with reason
`contaminated`.

Normalisation (`tokens`): Unicode NFKC, case-folded, every punctuation and symbol character turned into a
space, split on whitespace. Scripts written without spaces (Chinese, Japanese kana, Thai, Lao, Khmer,
Burmese) are split into single characters, so they are compared by character n-grams; Korean keeps its
spaced words. Tokens are hashed to 64 bits and n-grams to a 64-bit polynomial hash of their tokens, kept in
sorted numpy arrays (8 bytes per n-gram: the whole local benchmark set is a few MB).

Rules, for a generated text of m tokens (n_long = 13, n_short = 8 by default):

1. **exact**: its normalised token sequence equals an evaluation text's (only when m >= `min_exact_tokens`,
   4: "thank you", a one-word label or a number is not a leaked test item);
2. **long overlap** (m >= 13): it shares any 13-gram with an evaluation text, the rule of GPT-3 (Brown et
   al. 2020, appendix C) and of Llama 2's contamination analysis: 13 consecutive words in common almost
   never happen by chance, while a paraphrase rarely keeps 13 words in a row;
3. **contains a short evaluation text**: an evaluation text of 8-12 tokens (a Tatoeba or STS sentence,
   a Banking77 query: shorter than 13, so rule 2 cannot see it) occurs in it as a contiguous sequence;
4. **short text inside an evaluation text** (8 <= m < 13): every one of its 8-grams occurs in the
   evaluation texts (containment 1.0): it is a verbatim piece of one.

Texts under 8 tokens match only by rule 1.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from synthembed.config import ToggleModel

TEXT_FIELDS = ("query", "positive", "hard_negative")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the polynomial n-gram hash
# Scripts written without spaces between words: CJK ideographs (+ extension A, compatibility), kana, Thai,
# Lao, Khmer, Burmese.
_NO_SPACE = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\u31f0-\u31ff\u0e00-\u0eff"
                       r"\u1780-\u17ff\u1000-\u109f])")


class DecontaminateConfig(ToggleModel):
    """`decontaminate:` of a pipeline profile; `decontaminate: false` (or true) sets `enabled` alone."""

    enabled: bool = Field(True, description="remove generated rows that overlap the evaluation tasks' texts")
    long_ngram: int = Field(13, ge=4, description="n of the word n-gram rule for long texts (GPT-3: 13)")
    short_ngram: int = Field(8, ge=2, description="n of the containment rules for texts shorter than long_ngram")
    min_exact_tokens: int = Field(4, ge=1, description="exact normalised matches count from this many tokens")
    examples: int = Field(5, ge=0, description="removed rows quoted in the summaries")

    @model_validator(mode="after")
    def _order(self):
        if self.short_ngram >= self.long_ngram:
            raise ValueError(f"decontaminate.short_ngram ({self.short_ngram}) must be below long_ngram "
                             f"({self.long_ngram}); e.g. 8 and 13")
        return self


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols as spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words, with the characters of scripts written without spaces as tokens of their own."""
    out: list[str] = []
    for word in normalize(text).split():
        if _NO_SPACE.search(word):
            out += [piece for piece in _NO_SPACE.split(word) if piece]
        else:
            out.append(word)
    return out


class _TokenIds:
    """Token -> 64-bit hash, memoised (texts repeat their words)."""

    def __init__(self):
        self._cache: dict[str, int] = {}

    def __call__(self, toks: list[str]) -> np.ndarray:
        ids = []
        for t in toks:
            h = self._cache.get(t)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                self._cache[t] = h
            ids.append(h)
        return np.array(ids, dtype=np.uint64)


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram of `ids` (position order); empty when there are fewer than n tokens."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        for j in range(n):
            h = h * _MULT + ids[j:j + count]
    return h


class _HashSet:
    """Sorted 64-bit hashes, each with the index of the evaluation text it came from."""

    def __init__(self, hashes: list[np.ndarray], sources: list[np.ndarray]):
        h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        s = np.concatenate(sources) if sources else np.empty(0, np.int64)
        order = np.argsort(h, kind="stable")
        self.hashes, self.sources = h[order], s[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, queries: np.ndarray) -> np.ndarray:
        """Per query: the source index of an equal hash, or -1."""
        if not len(self.hashes) or not len(queries):
            return np.full(len(queries), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.hashes, queries), len(self.hashes) - 1)
        return np.where(self.hashes[pos] == queries, self.sources[pos], -1)


@dataclass(frozen=True)
class Match:
    rule: str          # exact | long_ngram | contains_eval_text | inside_eval_text
    task: str          # evaluation task (and subset) the text came from
    eval_text: str


class EvalIndex:
    """The n-grams of every evaluation text, for `match` (see the module docstring for the rules)."""

    def __init__(self, texts: Iterable[tuple[str, str]], config: DecontaminateConfig | None = None):
        self.config = config or DecontaminateConfig()
        self._ids = _TokenIds()
        self.texts: list[tuple[str, str]] = []
        c = self.config
        long_h, long_s, short_h, short_s = [], [], [], []
        whole: dict[int, tuple[list, list]] = {}
        for task, text in texts:
            ids = self._ids(tokens(text))
            if not len(ids):
                continue
            i = len(self.texts)
            self.texts.append((task, text))
            m = len(ids)
            # whole-text hash, keyed by length: exact matches and short texts contained in a generated one
            bucket = whole.setdefault(m, ([], []))
            bucket[0].append(ngram_hashes(ids, m))
            bucket[1].append(np.array([i], dtype=np.int64))
            for n, hs, ss in ((c.long_ngram, long_h, long_s), (c.short_ngram, short_h, short_s)):
                g = ngram_hashes(ids, n)
                if len(g):
                    hs.append(g)
                    ss.append(np.full(len(g), i, dtype=np.int64))
        self._long = _HashSet(long_h, long_s)
        self._short = _HashSet(short_h, short_s)
        self._whole = {m: _HashSet(*b) for m, b in whole.items()}

    def __len__(self) -> int:
        return len(self.texts)

    def _hit(self, rule: str, found: np.ndarray) -> Match | None:
        hits = found[found >= 0]
        if not len(hits):
            return None
        task, text = self.texts[int(hits[0])]
        return Match(rule, task, text)

    def match(self, text: str) -> Match | None:
        """The first rule under which `text` overlaps an evaluation text, or None."""
        c = self.config
        ids = self._ids(tokens(text))
        m = len(ids)
        if not m:
            return None
        if m >= c.min_exact_tokens and m in self._whole:
            if hit := self._hit("exact", self._whole[m].find(ngram_hashes(ids, m))):
                return hit
        if m >= c.long_ngram:
            if hit := self._hit("long_ngram", self._long.find(ngram_hashes(ids, c.long_ngram))):
                return hit
        for k in range(c.short_ngram, min(c.long_ngram, m)):  # k < m: k == m is the exact rule
            if k in self._whole:
                if hit := self._hit("contains_eval_text", self._whole[k].find(ngram_hashes(ids, k))):
                    return hit
        if c.short_ngram <= m < c.long_ngram:
            found = self._short.find(ngram_hashes(ids, c.short_ngram))
            if (found >= 0).all():
                return self._hit("inside_eval_text", found)
        return None


def filter_rows(rows: list[dict], index: EvalIndex) -> tuple[list[dict], list[dict]]:
    """(kept rows, removed rows); a removed row gets `reason` ("contaminated: ..."), `field`, `rule`,
    `eval_task` and `eval_text`."""
    kept, removed = [], []
    for row in rows:
        for field in TEXT_FIELDS:
            text = row.get(field)
            hit = index.match(text) if text else None
            if hit:
                removed.append({**row, "reason": f"contaminated: {field} matches {hit.task} ({hit.rule})",
                                "field": field, "rule": hit.rule, "eval_task": hit.task, "eval_text": hit.eval_text})
                break
        else:
            kept.append(row)
    return kept, removed
