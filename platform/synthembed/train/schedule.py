"""The training plan, known before any compute, and the learning-rate schedule it implies.

`plan_training` turns a `TrainConfig` and an example count into the numbers a user should see before
paying for GPUs: examples after mixing, steps per epoch, total steps, warm-up steps, texts and tokens per
step, and a rough memory estimate per worker. Its `problems` are the schedules that silently go wrong
(the whole run is warm-up, a handful of steps, a batch larger than the data); `--check` and the train
stage refuse them unless `train.allow_unusual_schedule: true`.

The schedule (`lr_at`): linear warm-up over W steps, then linear decay. Step s (0-based) runs at

    s <  W:  lr * (s + 1) / W          (the first step already learns; none runs at lr 0)
    s >= W:  lr * (T - s) / (T - W)    (the peak at s = W, the last step at lr / (T - W), never 0)

With W = 0 this is transformers' linear schedule without warm-up, step for step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel

from synthembed.packaged import cache_dir, is_named_model
from synthembed.train.config import TrainConfig

MIN_STEPS = 5  # fewer optimizer steps than this is a smoke test, not a training run
PAPER_WARMUP_RATIO = 0.1  # the paper: 100 warm-up steps of ~880


def count_steps(n_examples: int, batch_size: int, epochs: float, max_steps: int | None) -> tuple[int, int]:
    """(steps per epoch, total steps): whole batches only, the tail of an epoch is dropped."""
    per_epoch = n_examples // batch_size
    total = int(per_epoch * epochs)
    return per_epoch, max(1, min(total, max_steps) if max_steps else total)


def warmup_of(config: TrainConfig, total_steps: int) -> int:
    """Warm-up steps: `warmup_steps` when given, else `warmup_ratio` (default 0.1) of the run, rounded up."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    ratio = PAPER_WARMUP_RATIO if config.warmup_ratio is None else config.warmup_ratio
    return math.ceil(ratio * total_steps)


def lr_at(step: int, warmup: int, total: int) -> float:
    """The multiplier of `lr` at 0-based step `step` (see the module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_scheduler(optimizer, warmup: int, total: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, warmup, total))


class TrainPlan(BaseModel):
    """What a run will do, computed before it starts (`plan.json` in the run folder)."""

    examples: int
    examples_from: str
    batch_size: int
    num_workers: int
    queries_per_worker: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: float
    texts_per_step_max: int
    tokens_per_step_max: int
    tokens_total_max: int
    memory_per_worker_gib: float | None
    memory_note: str
    problems: list[str]

    def describe(self) -> str:
        mem = f"{self.memory_per_worker_gib:.1f} GiB" if self.memory_per_worker_gib is not None else "unknown"
        lines = [
            f"train plan: {self.examples} examples ({self.examples_from}), batch {self.batch_size} "
            f"({self.num_workers} workers x {self.queries_per_worker} queries)",
            f"  {self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all, {self.warmup_steps} warm-up",
            f"  at most {self.texts_per_step_max} texts and {self.tokens_per_step_max:,} tokens per step, "
            f"{self.tokens_total_max:,} tokens in all",
            f"  memory per worker: {mem} ({self.memory_note})",
        ]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def plan_training(config: TrainConfig, n_examples: int, examples_from: str = "the mixed data") -> TrainPlan:
    per_epoch, total = count_steps(n_examples, config.batch_size, config.epochs, config.max_steps)
    warmup = warmup_of(config, total)
    texts = config.batch_size * (3 if config.hard_negatives else 2)  # query, positive, hard negative
    tokens = texts * config.model.max_length
    memory, note = estimate_memory_gib(config)
    problems = []
    if n_examples < config.batch_size:
        problems.append(f"train.batch_size ({config.batch_size}) is larger than the data ({n_examples} examples, "
                        f"{examples_from}): lower train.batch_size or generate/mix in more data")
    elif total < MIN_STEPS:
        problems.append(f"the run has only {total} optimizer steps ({n_examples} examples // batch "
                        f"{config.batch_size} x {config.epochs} epochs): lower train.batch_size, raise "
                        "train.epochs or the data (generate.num_examples)")
    if warmup >= total:
        problems.append(f"warm-up ({warmup} steps) covers the whole run ({total} steps): the lr never reaches "
                        f"train.lr and never decays; set train.warmup_ratio (e.g. {PAPER_WARMUP_RATIO}) or fewer "
                        "train.warmup_steps")
    return TrainPlan(
        examples=n_examples, examples_from=examples_from, batch_size=config.batch_size,
        num_workers=config.num_workers, queries_per_worker=config.per_worker_batch, steps_per_epoch=per_epoch,
        total_steps=total, warmup_steps=warmup, epochs=config.epochs, texts_per_step_max=texts,
        tokens_per_step_max=tokens, tokens_total_max=tokens * total, memory_per_worker_gib=memory,
        memory_note=note, problems=problems,
    )


def model_dims(source: str) -> dict | None:
    """The base model's config.json, when it can be read without a download or a conversion."""
    path = Path(source).expanduser()
    if is_named_model(source):  # a packaged model: its converted folder, once a run has made it
        path = next((p.parent for p in sorted((cache_dir() / "models").glob(f"{source}-*/config.json"))), path)
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source, local_files_only=True).to_dict()
    except Exception:  # noqa: BLE001 - not local (a hub name offline, a packaged GGUF not converted yet)
        return None


def estimate_memory_gib(config: TrainConfig) -> tuple[float | None, str]:
    """A rough upper bound of one worker's peak memory: weights, LoRA state, activations of one pass.

    weights     parameters (from config.json) x 2 bytes in bf16, 4 in fp32
    LoRA        r x (in + out) per adapted linear x 16 bytes (fp32 weight, grad, two AdamW moments)
    activations per layer ~34 x texts x tokens x hidden bytes in 16-bit (Korthikanti et al. 2022, with a
                fused attention kernel); with gradient checkpointing only each layer's input is kept plus
                one layer's working set. Texts whose graphs are alive at once: one GradCache chunk, else
                the worker's whole share of the step (micro-batches all keep their graphs).
    """
    cfg = model_dims(config.model.source)
    if cfg is None:
        return None, "the base model's config.json is not available locally"
    if "text_config" in cfg:  # multimodal wrappers (Gemma 3) keep the language model's dims here
        cfg = {**cfg, **cfg["text_config"]}
    h, layers = cfg.get("hidden_size"), cfg.get("num_hidden_layers")
    inter, vocab = cfg.get("intermediate_size"), cfg.get("vocab_size")
    if not all((h, layers, inter, vocab)):
        return None, "config.json lacks hidden_size/num_hidden_layers/intermediate_size/vocab_size"
    heads = cfg.get("num_attention_heads") or 1
    head_dim = cfg.get("head_dim") or h // heads
    kv = (cfg.get("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    params = vocab * h + layers * sum(i * o for i, o in linears)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and config.use_gpu)
    width = 2 if bf16 else 4
    lora = layers * sum(config.lora.r * (i + o) for i, o in linears) * 16
    texts = config.chunk_size or config.per_worker_batch * (3 if config.hard_negatives else 2)
    per_layer = 34 * texts * config.model.max_length * h * width / 2
    if config.gradient_checkpointing:
        act = layers * texts * config.model.max_length * h * width + per_layer
    else:
        act = layers * per_layer
    total = (params * width + lora + act) * 1.2  # allocator slack, buffers, the reps of the whole batch
    return round(total / 2**30, 1), f"rough upper bound: {params / 1e9:.2f}B parameters in {'bf16' if bf16 else 'fp32'}"
