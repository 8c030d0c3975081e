"""Where the time goes: torch.profiler over Embedder.encode and one LoRA training step, per dtype.

Same texts as bench/encode.py (SciFact abstracts cut to 16-256 tokens), Gemma 3 270M, batch 16. Ops are
grouped into what the issue asks about: matmul (linear layers and their backward), attention (SDPA),
normalisation (RMSNorm's pow/mean/rsqrt/mul), embedding lookup, elementwise (activations, adds, casts)
and the rest; the share of each in self CPU time, and the wall time of the profiled region.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/profile_step.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from encode import mixed_length_texts  # noqa: E402

GROUPS = (  # first match wins; names are aten op names as the profiler reports them
    ("fused (inductor)", ("Call CompiledFxGraph", "cpp_fused", "triton_")),  # --compile: inductor's kernels
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax", "bmm", "baddbmm")),
    ("matmul", ("addmm", "aten::mm", "aten::matmul", "aten::linear", "mkldnn", "onednn")),
    ("embedding", ("embedding",)),
    ("normalisation", ("rsqrt", "aten::mean", "aten::pow", "norm")),
    ("copy/cast", ("copy_", "aten::to", "_to_copy", "contiguous", "clone")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "gelu", "silu", "tanh", "aten::neg",
                     "aten::cat", "aten::where", "masked_fill", "aten::cos", "aten::sin")),
)


def group(name: str) -> str:
    for label, keys in GROUPS:
        if any(k in name for k in keys):
            return label
    return "other"


def profile(fn) -> dict:
    fn()  # warm-up outside the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    by_group: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        by_group[group(evt.key)] += evt.self_cpu_time_total
        by_op[evt.key] += evt.self_cpu_time_total
    total = sum(by_group.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return {"wall_s": round(wall, 3),
            "share": {k: round(v / total, 3) for k, v in sorted(by_group.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": k, "share": round(v / total, 3)} for k, v in top]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true",
                        help="encode with model.compile, train with train.compile (-> profile_step_compile.json)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from synthembed.model import Embedder
    from synthembed.train.config import TrainConfig
    from synthembed.train.gradcache import ContrastiveStep
    from synthembed.train.lora import build_lora_embedder, make_embed_fn
    from synthembed.train.loss import InfoNCELoss

    texts = mixed_length_texts(Embedder.load(args.model, max_length=512).tokenizer, args.texts)
    out = {}
    for dtype in args.dtypes.split(","):
        emb = Embedder.load(args.model, max_length=256, dtype=dtype, compile=args.compile)
        encode = profile(lambda: emb.encode(texts, batch_size=16))
        cfg = TrainConfig(model={"source": args.model, "max_length": 128}, lora={"r": 16, "alpha": 32, "dropout": 0.0},
                          precision="bf16" if dtype == "bfloat16" else "float32", compile=args.compile)
        trainable = build_lora_embedder(cfg, torch.device("cpu"))  # base in `dtype`, as training loads it
        step = ContrastiveStep(make_embed_fn(trainable, torch.bfloat16 if dtype == "bfloat16" else None),
                               InfoNCELoss(0.02), None, micro_batch_size=8)
        half = len(texts) // 2
        queries, docs = trainable.tokenize(texts[:half]), trainable.tokenize(texts[half:])

        def train_step():
            from synthembed.train.data import ContrastiveBatch

            batch = ContrastiveBatch(query_ids=queries, doc_ids=docs, pos_keys=torch.arange(half), doc_keys=torch.arange(half))
            step(batch)
            trainable.model.zero_grad(set_to_none=True)

        out[dtype] = {"encode": encode, "train_step": profile(train_step)}
        print(dtype, "encode", encode["wall_s"], encode["share"], flush=True)
        print(dtype, "train ", out[dtype]["train_step"]["wall_s"], out[dtype]["train_step"]["share"], flush=True)
    path = write_result("profile_step_compile" if args.compile else "profile_step", {"profiles": out, "setup": {
        "model": args.model, "texts": args.texts, "encode": "batch 16, max_length 256",
        "train_step": f"{args.texts // 2} queries x {args.texts // 2} docs, max_length 128, micro-batches of 8, LoRA r16"},
        "command": "python bench/profile_step.py " + " ".join(sys.argv[1:])})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
