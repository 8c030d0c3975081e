"""Throughput of Embedder.encode against sentence-transformers on the same decoder model, per dtype.

Both sides: same model folder, same texts (mixed lengths 16-256 tokens cut from real SciFact abstracts),
same batch size, same dtype (one row per --dtypes entry: weights loaded in it, as dtype "auto" does),
last-token pooling on the same EOS-terminated input, L2-normalised. sentence-transformers gets the EOS
as text (its tokenizer does not append one), so both embed identical token sequences and the outputs
must agree (1e-4 in cosine in float32; bf16 rounds differently in differently padded batches). Runs
alternate (ours, theirs, ours, ...) so drift in machine load hits both sides alike. Each row carries its
fraction of the matmul roofline in its dtype, measured in the same run (bench/roofline.py).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/encode.py --model gemma3-270m --texts 128 --repeats 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402
from roofline import forward_flop_per_token, matmul_flop_per_s, roofline  # noqa: E402

import torch  # noqa: E402

from synthembed.model import Embedder, precision
from synthembed.model.loading import resolve_model_dir

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl.gz"


def mixed_length_texts(tokenizer, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = [json.loads(line)["text"] for line in gzip.open(SCIFACT, "rt", encoding="utf-8")]
    texts = []
    for doc in rng.sample(docs, n):
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        texts.append(tokenizer.decode(ids[: rng.randint(16, 256)]))
    return texts


def load_sides(model: str, dtype: str, compile_ours: bool = False):
    from sentence_transformers import SentenceTransformer, models

    start = time.perf_counter()
    # --compile: model.compile (inductor, dynamic shapes, every inference graph compiled at load)
    ours = Embedder.load(model, max_length=512, padding_side="left", dtype=dtype, compile=compile_ours)
    ours_load_seconds = time.perf_counter() - start
    folder = str(resolve_model_dir(model))
    # sentence-transformers 6 renders text through the tokenizer's chat template when it has one
    # (SmolLM2's does): pin it to plain text so both sides embed the same tokens.
    transformer = models.Transformer(
        folder, max_seq_length=512, model_kwargs={"dtype": dtype},
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    theirs = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    theirs.tokenizer.padding_side = "left"
    return ours, theirs, ours_load_seconds


def measure(model: str, dtype: str, texts: list[str], batch_size: int, repeats: int,
            compile_ours: bool = False) -> dict:
    ours, theirs, ours_load_seconds = load_sides(model, dtype, compile_ours)
    eos = ours.tokenizer.eos_token
    lengths = [len(x) for x in ours.tokenize(texts)]

    def run_ours():
        return ours.encode(texts, batch_size=batch_size)

    def run_theirs():
        out = theirs.encode([t + eos for t in texts], batch_size=batch_size, normalize_embeddings=True,
                            convert_to_tensor=True)
        return out.float().numpy()

    run_ours(), run_theirs()  # warm-up: allocator, thread pools, lazy init
    times = {"ours": [], "sentence_transformers": []}
    for _ in range(repeats):
        for name, fn in (("ours", run_ours), ("sentence_transformers", run_theirs)):
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                a = out
            else:
                b = out
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    tokens = sum(lengths)
    tps = {k: [tokens / t for t in v] for k, v in times.items()}
    ratios = [o / s for o, s in zip(tps["ours"], tps["sentence_transformers"])]
    return {
        "ratio": float(np.median(ratios)), "ratio_runs": ratios,
        "tokens_per_s": {k: spread(v) for k, v in tps.items()},
        "min_cosine_ours_vs_theirs": float(cos.min()),
        "flop_per_token": forward_flop_per_token(ours.model, lengths),
        "lengths": lengths, "ours_vectors": a,
        "ours_load_seconds": round(ours_load_seconds, 1),  # with --compile: the compile of every graph
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true", help="our side with model.compile (torch.compile at load)")
    parser.add_argument("--name", default="encode", help="results file name (bench/results/<name>.json)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    dtypes = args.dtypes.split(",")

    texts = mixed_length_texts(Embedder.load(args.model, max_length=512).tokenizer, args.texts)
    rows = {}
    for dtype in dtypes:
        peak_before = matmul_flop_per_s(dtype)
        r = measure(args.model, dtype, texts, args.batch_size, args.repeats, args.compile)
        peak_after = matmul_flop_per_s(dtype)
        # the roofline of this row: the mean of the matmul rate just before and just after it
        peak = {**peak_before, "flop_per_s": (peak_before["flop_per_s"] + peak_after["flop_per_s"]) / 2,
                "before": peak_before["flop_per_s"], "after": peak_after["flop_per_s"]}
        for side in ("ours", "sentence_transformers"):
            r[f"roofline_{side}"] = roofline(r["tokens_per_s"][side]["median"], r["flop_per_token"], peak)
        r["matmul"] = peak
        rows[dtype] = r
        print(f"{dtype}: ours {r['tokens_per_s']['ours']['median']:.0f} tok/s, "
              f"sentence-transformers {r['tokens_per_s']['sentence_transformers']['median']:.0f} tok/s, "
              f"ratio {r['ratio']:.2f} [{min(r['ratio_runs']):.2f}-{max(r['ratio_runs']):.2f}], "
              f"roofline fraction {r['roofline_ours']['fraction_of_roofline']:.2f} "
              f"(matmul {peak['flop_per_s'] / 1e9:.0f} GFLOP/s), min cosine vs theirs {r['min_cosine_ours_vs_theirs']:.5f}",
              flush=True)

    payload = {"rows": {}, "setup": {}}
    if {"float32", "bfloat16"} <= rows.keys():
        fp32, bf16 = rows["float32"], rows["bfloat16"]
        payload["ours_bf16_vs_ours_fp32"] = bf16["tokens_per_s"]["ours"]["median"] / fp32["tokens_per_s"]["ours"]["median"]
        cos = np.sum(fp32["ours_vectors"] * bf16["ours_vectors"], axis=1)  # both L2-normalised
        payload["min_cosine_bf16_vs_fp32"] = float(cos.min())
        print(f"ours bf16 / ours fp32: {payload['ours_bf16_vs_ours_fp32']:.2f}x; min cosine bf16 vs fp32 {cos.min():.4f}")
    for dtype, r in rows.items():
        r.pop("ours_vectors")
        lengths = r.pop("lengths")
        payload["rows"][dtype] = r
    payload["ratio"] = rows[dtypes[-1]]["ratio"]  # the headline: the last dtype asked for (bf16 by default)
    payload["setup"] = {
        "model": args.model, "texts": args.texts, "batch_size": args.batch_size, "repeats": args.repeats,
        "token_lengths": {"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
        "padding_side": "left", "auto_dtype_here": precision.describe(torch.device("cpu")),
        "ours_compiled": args.compile,
    }
    payload["loadavg_at_start"] = load_start
    payload["command"] = "python bench/encode.py " + " ".join(sys.argv[1:])
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
