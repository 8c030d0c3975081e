"""How close is a bf16 training step's LoRA gradient to the float32 one? Eager autocast vs train.compile.

The issue asks that bf16 training track fp32; the first loss agreeing says little about the backward pass.
This takes the first global batch bench/train.py trains on (gemma3-270m, 16 Banking77 queries + positives +
hard negatives, max_length 64, micro-batches of 8, tau 0.02), LoRA r16 on all linear layers with lora_B
drawn at random (peft starts it at zero, which makes every lora_A gradient zero and hides half the
comparison), and computes one step's gradient of every LoRA weight in:

  float32            base and LoRA in fp32, no autocast: the reference
  bf16               the default on a bf16 CPU: base in bf16, bf16 autocast, LoRA weights and grads fp32
  bf16_compile       the same with train.compile (inductor fuses the elementwise work and keeps it in fp32)
  bf16_math_attention  `bf16` with attn_implementation "eager" (diagnosis: is the SDPA kernel the cause?)

Reported per side: the loss, the cosine and relative error of the whole gradient vs float32, the ratio of
each tensor's gradient norm to float32's (worst five), and the step time (steady, after the first).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/train_grad_precision.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

SIDES = os.environ.get("BENCH_SIDES", "float32,bf16,bf16_compile,bf16_math_attention").split(",")
STEPS = 4  # the first computes the gradient compared (and compiles); the rest time a steady step


def side_gradient(name: str, rows: list[dict]) -> dict:
    import torch

    from synthembed.train import InfoNCELoss, TrainConfig
    from synthembed.train.data import ContrastiveCollator, Examples
    from synthembed.train.gradcache import ContrastiveStep
    from synthembed.train.lora import autocast_dtype, build_lora_embedder, make_embed_fn, trainable_parameters
    from train import MAX_LENGTH, MINI_BATCH, MODEL, TEMPERATURE

    model = {"source": MODEL, "max_length": MAX_LENGTH}
    if name == "bf16_math_attention":
        model["attn_implementation"] = "eager"
    config = TrainConfig(model=model, lora={"r": 16, "alpha": 32, "dropout": 0.0}, temperature=TEMPERATURE,
                         precision="float32" if name == "float32" else "bf16", compile=name == "bf16_compile",
                         mask_duplicates=False)
    torch.manual_seed(0)
    emb = build_lora_embedder(config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in emb.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.01)
    batch = ContrastiveCollator(emb, MAX_LENGTH)(Examples(
        [r["instruction"] for r in rows], [r["query"] for r in rows], [r["positive"] for r in rows],
        [r["hard_negative"] for r in rows]))
    step = ContrastiveStep(make_embed_fn(emb, autocast_dtype(config, torch.device("cpu"))),
                           InfoNCELoss(TEMPERATURE, False), None, torch.device("cpu"), MINI_BATCH)
    times, first = [], None
    for i in range(STEPS):
        t0 = time.perf_counter()
        loss = step(batch)
        times.append(time.perf_counter() - t0)
        if i == 0:
            first = {"loss": loss, "grads": {n: p.grad.float().clone() for n, p in emb.model.named_parameters()
                                             if p.requires_grad}}
        emb.model.zero_grad(set_to_none=True)
    assert all(p.dtype == torch.float32 for p in trainable_parameters(emb.model))
    return {**first, "step_seconds": times}


def compare(side: dict, ref: dict) -> dict:
    import torch

    a = torch.cat([g.flatten() for g in side["grads"].values()])
    b = torch.cat([g.flatten() for g in ref["grads"].values()])
    ratios = {n: (side["grads"][n].norm() / ref["grads"][n].norm()).item() for n in ref["grads"]}
    worst = sorted(ratios, key=lambda n: -abs(ratios[n] - 1))[:5]
    return {
        "grad_cosine_vs_float32": torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item(),
        "grad_relative_error_vs_float32": ((a - b).norm() / b.norm()).item(),
        "grad_norm_ratio_vs_float32": (a.norm() / b.norm()).item(),
        "worst_tensor_norm_ratios": {n.replace("base_model.model.", "").replace(".default.weight", ""): round(ratios[n], 3)
                                     for n in worst},
    }


def main() -> None:
    import torch

    from common import spread, write_result
    from train import BATCH, DATA, MAX_LENGTH, MINI_BATCH, MODEL, _rows_in_our_order

    if not DATA.is_dir():
        from quality_data import build

        build(DATA.parent)
    torch.set_num_threads(2)
    rows = _rows_in_our_order()[:BATCH]
    results = {name: side_gradient(name, rows) for name in SIDES}
    ref = results["float32"]
    payload = {"sides": {}}
    for name, r in results.items():
        steady = r["step_seconds"][1:]
        payload["sides"][name] = {
            "loss": r["loss"], **compare(r, ref),
            "first_step_seconds": round(r["step_seconds"][0], 2), "step_seconds_steady": spread(steady),
            "speed_vs_float32": statistics.median(ref["step_seconds"][1:]) / statistics.median(steady),
        }
        s = payload["sides"][name]
        print(f"{name:<22} loss {s['loss']:.4f}  grad cosine {s['grad_cosine_vs_float32']:.4f}  rel err "
              f"{s['grad_relative_error_vs_float32']:.3f}  step {s['step_seconds_steady']['median']:.2f}s "
              f"({s['speed_vs_float32']:.2f}x fp32)  worst {s['worst_tensor_norm_ratios']}", flush=True)
    payload["setup"] = {"model": MODEL, "batch": f"{BATCH} queries + positives + hard negatives (bench/train.py's first)",
                        "max_length": MAX_LENGTH, "micro_batch": MINI_BATCH, "lora": "r16 all-linear, lora_B ~ N(0, 0.01)",
                        "steps_per_side": STEPS, "torch_threads": 2, "inductor_cache": os.environ.get(
                            "TORCHINDUCTOR_CACHE_DIR", "default (may be warm)")}
    print("wrote", write_result("train_grad_precision", payload))


if __name__ == "__main__":
    main()
