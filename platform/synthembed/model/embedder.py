"""The decoder-LLM embedder shared by training, evaluation and serving.

An embedding is the last-layer hidden state at an EOS token appended to the (formatted) text:

    ids  = model.tokens.TextTokenizer(texts, instruction)   (prefix + text cut to fit + one EOS)
    e    = h_L[position of that eos]            (L2-normalised unless normalize=False)

Three details that silently break embeddings if done differently in two places, so they live once:
- the token rule (`synthembed.model.tokens`, shared with the vLLM engine);
- position ids come from the attention mask, so a left-padded text sees the positions it would see alone
  (RoPE is shift-invariant only up to float error; learned absolute positions are not at all);
- the pooled index is the last attended position, which is correct for left and right padding alike.

Inference (`encode`, `embed_ids`) runs the tokens that every text of a batch starts with once, not once per
text. Attention is causal, so the keys and values of a shared prefix (BOS + "Instruct: ...\nQuery:") do not
depend on what follows it: they are computed at batch size 1, repeated over the batch, and the texts' own
tokens attend to them through the KV cache. Same ids, same positions, same embeddings (to float rounding);
for short instructed texts (STS, classification, bitext queries) the instruction is a third to a half of
every text's tokens. Training keeps one plain pass (`embed`): LoRA's gradient flows through the prefix too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from synthembed.config import StrictModel
from synthembed.model.batches import length_sorted_batches, shared_prefix_length
from synthembed.model.loading import describe_sources, resolve_model_dir
from synthembed.model.precision import inference_dtype
from synthembed.model.tokens import TextTokenizer

log = logging.getLogger(__name__)

# Below this many shared tokens the extra batch-1 pass and the cache copy cost about what they save.
MIN_SHARED_PREFIX = 4


class ModelConfig(StrictModel):
    """Which model to embed with, and how."""

    source: str = Field("gemma3-270m", description="model to load: " + describe_sources())
    adapter: str | None = Field(None, description="optional LoRA adapter folder (peft) applied on top of source")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "auto", description="auto: bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else float32"
    )
    device: str = Field("auto", description="'auto' picks cuda when available, else cpu")
    max_length: int = Field(512, ge=2, le=32768, description="tokens per text, EOS included")
    batch_size: int = Field(32, ge=1, description="most texts per forward pass")
    max_batch_tokens: int | None = Field(
        None, ge=2, description="most padded tokens (texts x longest text) per forward pass; None: batch_size "
        "texts per pass whatever their length. With a budget, short texts share larger passes")
    padding_side: Literal["left", "right"] = "left"
    normalize: bool = True
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    share_prefix: bool = Field(True, description="inference computes the tokens every text of a batch starts with "
                               "(BOS + instruction) once per batch; false: once per text (same embeddings)")
    compile: bool = Field(False, description="inference runs the backbone through torch.compile (inductor, dynamic "
                          "shapes): bf16 encoding ~1.4x faster on an AMX CPU and closer to float32, after a one-off "
                          "compile of 2-4 minutes per process at load (2 cores); for serving replicas and long evaluations")


def require_compiler(device: torch.device, setting: str) -> None:
    """Fail at load, naming `setting`, where torch.compile could not build CPU kernels.

    Why: inductor compiles its CPU kernels with a C++ compiler found at run time; without one it fails
    inside the first forward pass (a request, or a training step that Ray would retry to no end)."""
    if device.type != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # inductor's InvalidCxxCompiler
        raise RuntimeError(f"{setting}: torch.compile needs a C++ compiler on CPU and found none ({err}); "
                           f"install g++ (Debian: apt install g++) or set {setting}: false") from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Embedder:
    """Encode texts into L2-normalised float32 vectors with last-token (EOS) pooling."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: ModelConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ModelConfig()
        self.text_tokenizer = TextTokenizer(tokenizer, self.config.max_length)
        self.eos_id: int = self.text_tokenizer.eos_id
        self.pad_id: int = self.text_tokenizer.pad_id
        self.prefix_ids: list[int] = self.text_tokenizer.prefix_ids

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
        device = pick_device(config.device)
        dtype = inference_dtype(config.dtype, device)
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
        embedder = cls(model, tokenizer, config)
        if config.compile:
            embedder.compile()
        return embedder

    def compile(self) -> None:
        """torch.compile the backbone and compile every graph inference runs, now rather than in a request.

        Why: in bf16 on CPU, a third of an eager pass is elementwise work around the matmuls (Gemma 3's six
        float32 RMSNorms a layer with their casts, GELU, RoPE); inductor fuses it (bench/results/
        encode_compile.json) and keeps the fused intermediates in float32. Shapes are dynamic, but batch
        size 1 is specialised, so the warm-up covers: batches with a shared prefix (the prefix pass at batch
        1 with a cache, then the texts; two batch sizes, since the first trace fixes the batch size of the
        cache it reads and only a second size makes it dynamic), a batch without one, and a single text."""
        require_compiler(self.device, "model.compile")
        start = time.perf_counter()
        self.model = torch.compile(self.model, dynamic=True)
        instruction = "Retrieve semantically similar text."
        with torch.inference_mode():
            for ids in (self.tokenize(["a warm-up text", "and a second one"], instruction),
                        self.tokenize(["a warm-up text", "and a second one", "then a third"], instruction),
                        self.tokenize(["a warm-up text", "and a second, longer one"]),
                        self.tokenize(["one text"])):
                self.embed_shared_prefix(ids)
        log.info("compiled the backbone for inference in %.0f s", time.perf_counter() - start)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    # -------------------------------------------------------------------------------------- tokenizing
    def tokenize(
        self, texts: Sequence[str], instruction: str | None | list[str | None] = None, max_length: int | None = None
    ) -> list[list[int]]:
        """Token ids per text: the prefix, the formatted text cut to fit, then exactly one EOS (max_length in all)."""
        return self.text_tokenizer(texts, instruction, max_length or self.config.max_length)

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
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return _at_last_attended(hidden, attention_mask)

    def embed_shared_prefix(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Un-normalised embeddings of token id lists for inference, the batch's shared prefix computed once.

        Equal to `embed(**collate(ids))` up to float rounding (tests pin it, past Gemma's sliding window too)."""
        shared = shared_prefix_length(ids) if self.config.share_prefix else 0
        if len(ids) < 2 or shared < MIN_SHARED_PREFIX:
            return self.embed(**self.collate(ids))
        prefix = torch.tensor([list(ids[0][:shared])], dtype=torch.long, device=self.device)
        cache = self.model(input_ids=prefix, use_cache=True).cache
        cache.batch_repeat_interleave(len(ids))
        # Padding goes after the texts here: between prefix and text it would sit inside a sliding window
        # (Gemma 3's local layers count the window in cache slots), hiding prefix tokens the text should see.
        rest = self.collate([x[shared:] for x in ids], padding_side="right")
        mask = torch.cat([torch.ones_like(rest["attention_mask"][:, :1]).expand(-1, shared), rest["attention_mask"]], 1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        hidden = self.model(
            input_ids=rest["input_ids"], attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True
        ).last_hidden_state
        return _at_last_attended(hidden, rest["attention_mask"])

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Un-normalised embeddings of token id lists as float32 [n, dim] (one forward pass; serving's unit)."""
        with torch.inference_mode():
            return self.embed_shared_prefix(ids).float().cpu().numpy()

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None | list[str | None] = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        show_progress: bool = False,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """Embed `texts` (query-formatted when an instruction is given) as a float32 [n, dim] array.

        Batches: longest first, at most `batch_size` texts and `max_batch_tokens` padded tokens each
        (defaults: the config's)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text as [text]")
        batch_size = batch_size or self.config.batch_size
        max_batch_tokens = max_batch_tokens or self.config.max_batch_tokens
        normalize = self.config.normalize if normalize is None else normalize
        ids = self.tokenize(texts, instruction, max_length)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        batches = length_sorted_batches([len(x) for x in ids], batch_size, max_batch_tokens)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encode", unit="batch")
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for idx in batches:
                emb = self.embed_shared_prefix([ids[i] for i in idx])
                if normalize:
                    emb = F.normalize(emb.float(), dim=-1)
                out[idx] = emb.float().cpu().numpy()
        self.model.train(was_training)
        return out


def _at_last_attended(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each row's hidden state at its last attended position (left or right padding)."""
    last = attention_mask.shape[1] - 1 - attention_mask.flip(-1).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
