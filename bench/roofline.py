"""How far a benchmark is from the chip: achieved FLOP/s beside the matmul throughput measured in the same run.

    achieved  = tokens/s x FLOP per token              (useful tokens only: padding is not counted)
    roofline  = median FLOP/s of a square matmul in the benchmark's dtype and thread count, measured
                in the same script run (the machine's load then hits both alike)
    fraction  = achieved / roofline

FLOP per token of a decoder's forward pass, from its config and its weights:

    2 x (weights of its linear layers)                     every token passes every projection once
  + 4 x layers x heads x head_dim x mean attended context  QK^T and AV (causal: token p sees p tokens)

The embedding lookup has no matmul and is not counted; nor are norms and activations (they are memory,
not FLOP, bound). Training counts 3x the forward (the forward, then the backward's activation gradient
(1x) and weight gradient (1x), the usual 6N rule) minus the weight gradient of frozen weights: with
LoRA the base weights get none, so a LoRA step's useful work is 2x forward. GradCache's extra no-grad
forward is overhead, not useful work, and is not counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence


def matmul_flop_per_s(dtype: str, size: int = 2048, min_repeats: int = 5, min_seconds: float = 1.0) -> dict:
    """Median FLOP/s of size^3 matmuls in `dtype` on this process's torch threads.

    Repeats for at least `min_seconds`: with AMX a bf16 2048^3 matmul takes ~9 ms, and five samples of
    that length put one scheduler hiccup into the median (two runs of one script read 1.49 and 1.91
    TFLOP/s with five)."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernel on the first call
        a @ b
    rates: list[float] = []
    begin = time.perf_counter()
    while len(rates) < min_repeats or time.perf_counter() - begin < min_seconds:
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start))
    return {"dtype": dtype, "size": size, "threads": torch.get_num_threads(), "repeats": len(rates),
            "flop_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}


def around(start: dict, end: dict) -> dict:
    """One roofline from matmul rates measured before and after a long benchmark (the load may drift)."""
    return {**start, "flop_per_s": (start["flop_per_s"] + end["flop_per_s"]) / 2,
            "start": start["flop_per_s"], "end": end["flop_per_s"]}


def _text_config(config):
    return getattr(config, "text_config", None) or config


def linear_weights(model) -> int:
    """Weights of the model's linear layers (LoRA's included: they are small, and they do run)."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def mean_causal_context(lengths: Sequence[int]) -> float:
    """Mean number of tokens a token attends to, over all tokens of texts of these lengths."""
    return sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)


def forward_flop_per_token(model, lengths: Sequence[int]) -> float:
    cfg = _text_config(model.config)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * mean_causal_context(lengths)
    return 2 * linear_weights(model) + attention


def roofline(tokens_per_s: float, flop_per_token: float, peak: dict) -> dict:
    achieved = tokens_per_s * flop_per_token
    return {"achieved_flop_per_s": achieved, "roofline_flop_per_s": peak["flop_per_s"],
            "fraction_of_roofline": achieved / peak["flop_per_s"], "flop_per_token": flop_per_token,
            "roofline_dtype": peak["dtype"]}
