"""bench/roofline.py: FLOP per token counted from a real model's config and weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from roofline import forward_flop_per_token, linear_weights, mean_causal_context, roofline  # noqa: E402


def test_mean_causal_context_by_hand():
    # one text of 3 tokens: tokens see 1, 2, 3 tokens; another of 1 token sees 1 -> (1+2+3+1)/4
    assert mean_causal_context([3, 1]) == pytest.approx(7 / 4)


def test_flop_per_token_of_the_tiny_llama_from_its_config(tiny_embedder):
    cfg = tiny_embedder.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * head_dim
    per_layer = cfg.hidden_size * (cfg.hidden_size + 2 * kv) + cfg.hidden_size * cfg.hidden_size \
        + 3 * cfg.hidden_size * cfg.intermediate_size  # q, k, v; o; gate, up, down
    assert linear_weights(tiny_embedder.model) == cfg.num_hidden_layers * per_layer
    lengths = [10, 20]
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * mean_causal_context(lengths)
    assert forward_flop_per_token(tiny_embedder.model, lengths) == pytest.approx(2 * cfg.num_hidden_layers * per_layer + attention)


def test_roofline_fraction():
    r = roofline(tokens_per_s=1000, flop_per_token=2e8, peak={"flop_per_s": 4e11, "dtype": "bfloat16"})
    assert r["achieved_flop_per_s"] == 2e11 and r["fraction_of_roofline"] == 0.5
