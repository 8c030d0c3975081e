"""The trainable embedder: the shared `Embedder` with peft LoRA on its backbone."""

from __future__ import annotations

import contextlib
import logging

import torch

from synthembed.model import Embedder, precision
from synthembed.model.embedder import require_compiler
from synthembed.train.config import TrainConfig

log = logging.getLogger(__name__)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (paper: mixed precision) where the device computes bf16 natively; see model.precision."""
    return precision.autocast_dtype(config.precision, device)


def build_lora_embedder(config: TrainConfig, device: torch.device) -> Embedder:
    """Load the base model on `device` and wrap its backbone with LoRA adapters (kept in float32)."""
    # The frozen base is stored in bf16 when training in bf16 (half the memory of a 7B model); peft
    # keeps the LoRA weights (and so AdamW's state) in float32 either way.
    dtype = "bfloat16" if autocast_dtype(config, device) is not None else "float32"
    if config.model.compile:
        log.info("model.compile applies to inference (evaluation, serving); train.compile compiles training")
    # peft wraps the plain module (a compiled one would hide the layers it targets); train.compile then
    # compiles the wrapped one
    embedder = add_lora(Embedder.load(config.model, device=str(device), dtype=dtype, compile=False), config)
    if config.compile:
        require_compiler(embedder.device, "train.compile")
        # in place (nn.Module.compile): parameter names, and so checkpoints and the saved adapter, stay as
        # they are. Graphs compile on the first step, forward and backward, and again per new grad mode
        # (GradCache's no-grad pass) or for a micro-batch of one text (batch size 1 is specialised).
        embedder.model.compile(dynamic=True)
        log.info("train.compile: the first step compiles the model (minutes on CPU)")
    return embedder


def add_lora(embedder: Embedder, config: TrainConfig) -> Embedder:
    """Wrap the embedder's backbone with trainable LoRA adapters (in place) and return it."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        bias="none",
    )
    model = get_peft_model(embedder.model, lora)
    if config.gradient_checkpointing:
        # non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    embedder.model = model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %s trainable parameters", config.lora.r, config.lora.target_modules, f"{trainable:,}")
    return embedder


def make_embed_fn(embedder: Embedder, dtype: torch.dtype | None):
    """token-id lists -> embeddings, through the shared collate/embed (last-token pooling)."""
    device = embedder.device

    def embed(ids):
        batch = embedder.collate(ids)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            return embedder.embed(**batch)

    return embed


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
