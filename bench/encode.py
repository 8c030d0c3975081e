"""Throughput of Embedder.encode against sentence-transformers on the same decoder model.

Both sides: same model folder, same texts (mixed lengths 16-256 tokens cut from real SciFact abstracts),
same batch size, float32 on CPU, last-token pooling on the same EOS-terminated input, L2-normalised.
sentence-transformers gets the EOS as text (its tokenizer does not append one), so both embed identical
token sequences and the outputs must agree to 1e-4 in cosine. Runs alternate (ours, theirs, ours, ...)
so drift in machine load hits both sides alike.

    .venv/bin/python bench/encode.py --model smollm2-135m --texts 256 --batch-size 32 --repeats 3
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

from synthembed.model import Embedder
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_start = os.getloadavg()

    from sentence_transformers import SentenceTransformer, models

    ours = Embedder.load(args.model, max_length=512, padding_side="left")
    folder = str(resolve_model_dir(args.model))
    # sentence-transformers 6 renders text through the tokenizer's chat template when it has one
    # (SmolLM2's does): pin it to plain text so both sides embed the same tokens.
    transformer = models.Transformer(
        folder, max_seq_length=512, model_kwargs={"dtype": "float32"},
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    theirs = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    theirs.tokenizer.padding_side = "left"

    texts = mixed_length_texts(ours.tokenizer, args.texts)
    eos = ours.tokenizer.eos_token
    lengths = [len(x) for x in ours.tokenize(texts)]

    def run_ours():
        return ours.encode(texts, batch_size=args.batch_size)

    def run_theirs():
        return theirs.encode([t + eos for t in texts], batch_size=args.batch_size, normalize_embeddings=True)

    run_ours(), run_theirs()  # warm-up: allocator, thread pools, lazy init
    times = {"ours": [], "sentence_transformers": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("sentence_transformers", run_theirs)):
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                a = out
            else:
                b = out
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    tps = {k: [args.texts / t for t in v] for k, v in times.items()}
    ratios = [o / s for o, s in zip(tps["ours"], tps["sentence_transformers"])]
    ratio = float(np.median(ratios))

    print(f"model {args.model}, {args.texts} texts, {min(lengths)}-{max(lengths)} tokens (EOS incl.), batch {args.batch_size}")
    print(f"{'side':<24}{'texts/s median':>16}{'min':>10}{'max':>10}")
    for name, values in tps.items():
        print(f"{name:<24}{np.median(values):>16.2f}{min(values):>10.2f}{max(values):>10.2f}")
    print(f"ratio ours/sentence-transformers (median of paired runs): {ratio:.3f}  [{min(ratios):.3f}-{max(ratios):.3f}]")
    print(f"cosine(ours, theirs): min {cos.min():.6f}  (1 - min = {1 - cos.min():.2e})")

    path = write_result(
        "encode",
        {
            "ratio": ratio,
            "ratio_runs": ratios,
            "throughput_texts_per_s": {k: spread(v) for k, v in tps.items()},
            "min_cosine_ours_vs_theirs": float(cos.min()),
            "outputs_equal_within_1e-4_cosine": bool(1 - cos.min() < 1e-4),
            "setup": {
                "model": args.model,
                "texts": args.texts,
                "token_lengths": {"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "dtype": "float32",
                "padding_side": "left",
            },
            "loadavg_at_start": load_start,
            "command": "python bench/encode.py " + " ".join(sys.argv[1:]),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
