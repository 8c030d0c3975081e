"""The token rule every engine embeds with (torch, vLLM, Ray Data), written once.

    ids = prefix + tokens(format_text(text, instruction))[: max_length - 1 - len(prefix)] + [eos]

`prefix` is what the tokenizer puts before a text (BOS for Llama, Mistral, Gemma; nothing for GPT-2 style
BPE such as SmolLM2 or Qwen2), found once by probing it. EOS is appended by us, exactly once, after
truncation. The text is tokenized without the tokenizer's own special tokens, because tokenizers disagree
on whether they append an EOS (merged/'s tokenizer does, for sentence-transformers), and Hugging Face
truncation reserves room for whatever a post-processor adds: with it, a long text would keep one content
token fewer than the same text on the base tokenizer.

Engines are handed these ids, never text: vLLM's own tokenization adds special tokens by the tokenizer's
rules and appends no EOS, so two engines given the same text would embed different token sequences.
No torch here: the vLLM environment and Ray Data workers import it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from synthembed.model.formatting import format_texts


def special_prefix(tokenizer) -> list[int]:
    """The special tokens a tokenizer puts before a text (e.g. [BOS]); what it appends is ignored."""
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    raise ValueError(f"cannot find the text's tokens {plain} inside {full}: the tokenizer rewrites texts "
                     "when it adds special tokens; last-token pooling needs a plain prefix")


class TextTokenizer:
    """Texts (and an optional query instruction) -> token ids ending in exactly one EOS."""

    def __init__(self, tokenizer, max_length: int):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; last-token pooling needs one")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.prefix_ids: list[int] = special_prefix(tokenizer)

    @classmethod
    def from_folder(cls, model_dir, max_length: int) -> "TextTokenizer":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model_dir), max_length)

    def __call__(
        self, texts: Sequence[str], instruction: str | None | list[str | None] = None, max_length: int | None = None
    ) -> list[list[int]]:
        max_length = max_length or self.max_length
        budget = max_length - 1 - len(self.prefix_ids)
        if budget < 1:
            raise ValueError(f"max_length must be >= {len(self.prefix_ids) + 2} (prefix, one token of text, EOS), "
                             f"got {max_length}")
        formatted = format_texts(list(texts), instruction)
        encoded = self.tokenizer(
            formatted, add_special_tokens=False, truncation=True, max_length=budget, padding=False
        )["input_ids"]
        ids = []
        for seq in encoded:
            seq = list(seq)
            while seq and seq[-1] == self.eos_id:  # a text ending in the EOS string: ours stays the only one
                seq.pop()
            ids.append(self.prefix_ids + seq + [self.eos_id])
        return ids
