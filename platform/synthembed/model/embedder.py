"""The decoder-LLM embedder shared by training, evaluation and serving.

An embedding is the last-layer hidden state at an EOS token appended to the (formatted) text:

    ids  = prefix + tokens(format_text(text, instruction))[: max_length - 1 - len(prefix)] + [eos]
    e    = h_L[position of that eos]            (L2-normalised unless normalize=False)

`prefix` is what the tokenizer puts before a text (BOS for Llama, Mistral, Gemma; nothing for GPT-2 style
BPE such as SmolLM2 or Qwen2), found once by probing it.

Three details that silently break embeddings if done differently in two places, so they live here once:
- EOS is appended by us, exactly once, after truncation. The text is tokenized without the tokenizer's
  own special tokens, because tokenizers disagree on whether they append an EOS (merged/'s tokenizer does,
  for sentence-transformers), and Hugging Face truncation reserves room for whatever a post-processor
  adds: with it, a long text would keep one content token fewer than the same text on the base tokenizer;
- position ids come from the attention mask, so a left-padded text sees the positions it would see alone
  (RoPE is shift-invariant only up to float error; learned absolute positions are not at all);
- the pooled index is the last attended position, which is correct for left and right padding alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from synthembed.config import StrictModel
from synthembed.model.formatting import format_texts
from synthembed.model.loading import describe_sources, resolve_model_dir

log = logging.getLogger(__name__)


class ModelConfig(StrictModel):
    """Which model to embed with, and how."""

    source: str = Field("gemma3-270m", description="model to load: " + describe_sources())
    adapter: str | None = Field(None, description="optional LoRA adapter folder (peft) applied on top of source")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    device: str = Field("auto", description="'auto' picks cuda when available, else cpu")
    max_length: int = Field(512, ge=2, le=32768, description="tokens per text, EOS included")
    batch_size: int = Field(32, ge=1)
    padding_side: Literal["left", "right"] = "left"
    normalize: bool = True
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def special_prefix(tokenizer) -> list[int]:
    """The special tokens a tokenizer puts before a text (e.g. [BOS]); what it appends is ignored."""
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    raise ValueError(f"cannot find the text's tokens {plain} inside {full}: the tokenizer rewrites texts "
                     "when it adds special tokens; last-token pooling needs a plain prefix")


class Embedder:
    """Encode texts into L2-normalised float32 vectors with last-token (EOS) pooling."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: ModelConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ModelConfig()
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; last-token pooling needs one")
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.prefix_ids: list[int] = special_prefix(tokenizer)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, config: ModelConfig | str | None = None, **overrides) -> "Embedder":
        """Load from a `ModelConfig` (or just a source string) with an optional LoRA adapter."""
        from transformers import AutoModel, AutoTokenizer

        if isinstance(config, str):
            config = ModelConfig(source=config, **overrides)
        elif config is None:
            config = ModelConfig(**overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        model_dir = resolve_model_dir(config.source)
        device = _pick_device(config.device)
        dtype = _pick_dtype(config.dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # AutoModel gives the backbone without the LM head: Gemma's head alone is 262k x 640 weights.
        model = AutoModel.from_pretrained(model_dir, dtype=dtype, attn_implementation=config.attn_implementation)
        if config.adapter:
            from peft import PeftModel

            adapter = Path(config.adapter)
            if not (adapter / "adapter_config.json").is_file():
                raise FileNotFoundError(f"model.adapter: {adapter} has no adapter_config.json (a peft LoRA folder)")
            model = PeftModel.from_pretrained(model, str(adapter))
        model.to(device).eval()
        log.info("loaded %s (%s) on %s as %s", config.source, model_dir, device, dtype)
        return cls(model, tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    # -------------------------------------------------------------------------------------- tokenizing
    def tokenize(
        self, texts: Sequence[str], instruction: str | None | list[str | None] = None, max_length: int | None = None
    ) -> list[list[int]]:
        """Token ids per text: the prefix, the formatted text cut to fit, then exactly one EOS (max_length in all)."""
        max_length = max_length or self.config.max_length
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

    def collate(self, ids: Sequence[Sequence[int]], padding_side: str | None = None) -> dict[str, torch.Tensor]:
        """Pad token id lists into `input_ids` and `attention_mask` tensors on the model's device."""
        side = padding_side or self.config.padding_side
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        device = self.device
        return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}

    # ------------------------------------------------------------------------------------ forward pass
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Un-normalised last-token embeddings, differentiable (training calls this directly)."""
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.flip(-1).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None | list[str | None] = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` (query-formatted when an instruction is given) as a float32 [n, dim] array."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text as [text]")
        batch_size = batch_size or self.config.batch_size
        normalize = self.config.normalize if normalize is None else normalize
        ids = self.tokenize(texts, instruction, max_length)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        # Longest first: similar lengths share a batch (little padding), and an out-of-memory shows up
        # on the first batch rather than at the end.
        order = np.argsort([-len(x) for x in ids], kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encode", unit="batch")
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for idx in batches:
                emb = self.embed(**self.collate([ids[i] for i in idx]))
                if normalize:
                    emb = F.normalize(emb.float(), dim=-1)
                out[idx] = emb.float().cpu().numpy()
        self.model.train(was_training)
        return out
