"""Inference with the batch's shared prefix computed once, against every text computed whole.

Workload: the texts the demo's evaluation encodes (every `--every`-th text of each task in
configs/cpu-tiny.yaml `evaluate.tasks`, formatted as evaluated: see bench/encode_batching.py), encoded
one task at a time as mteb asks for them: each call shares one instruction, or none (SciFact documents).
Same model, dtype (the `auto` pick), max_length, batches and texts on both sides; they differ only in
`model.share_prefix`:

    whole      every text's tokens run through the model (share_prefix: false)
    shared     the tokens all texts of a batch start with (BOS + instruction) run once per batch

Runs alternate side by side, so drift in machine load hits both alike. Figures per task and in all: text
tokens per second (the same count on both sides, so the ratio is the speed-up), the ratio with its spread,
the minimum cosine between the two sides' vectors, and the fraction of the matmul roofline in the same dtype
counted on the tokens each side actually computes.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/shared_prefix.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402
from encode_batching import demo_workload  # noqa: E402
from roofline import around, forward_flop_per_token, matmul_flop_per_s, roofline  # noqa: E402

from synthembed.model import Embedder  # noqa: E402
from synthembed.model.batches import length_sorted_batches, shared_prefix_length  # noqa: E402
from synthembed.model.embedder import MIN_SHARED_PREFIX  # noqa: E402

SIDES = ("whole", "shared")


def computed_tokens(ids: list[list[int]], batch_size: int, max_batch_tokens: int | None) -> int:
    """Tokens the shared side runs: per batch, the shared prefix once plus every text's remainder."""
    total = 0
    for idx in length_sorted_batches([len(x) for x in ids], batch_size, max_batch_tokens):
        batch = [ids[i] for i in idx]
        shared = shared_prefix_length(batch)
        if len(batch) < 2 or shared < MIN_SHARED_PREFIX:
            shared = 0
        total += sum(len(x) for x in batch) - shared * max(len(batch) - 1, 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64, help="the demo's evaluate.model.batch_size")
    ap.add_argument("--max-batch-tokens", type=int, default=2048, help="the demo's evaluate.model.max_batch_tokens")
    ap.add_argument("--every", type=int, default=3, help="keep every N-th text of each task")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    groups: dict[str | None, list[str]] = {}
    for text, instruction in demo_workload(args.every):
        groups.setdefault(instruction, []).append(text)
    embedders = {side: Embedder.load(args.model, max_length=args.max_length, batch_size=args.batch_size,
                                     max_batch_tokens=args.max_batch_tokens, share_prefix=side == "shared")
                 for side in SIDES}
    dtype = str(next(embedders["whole"].model.parameters()).dtype).removeprefix("torch.")
    ids = {i: embedders["whole"].tokenize(texts, i) for i, texts in groups.items()}
    lengths = [len(x) for group in ids.values() for x in group]
    flop_per_token = forward_flop_per_token(embedders["whole"].model, lengths)

    def run(side: str) -> dict[str | None, tuple[float, np.ndarray]]:
        out = {}
        for instruction, texts in groups.items():
            start = time.perf_counter()
            vectors = embedders[side].encode(texts, instruction)
            out[instruction] = (time.perf_counter() - start, vectors)
        return out

    vectors = {side: {i: v for i, (_, v) in run(side).items()} for side in SIDES}  # warm-up, compared below
    peak_start = matmul_flop_per_s(dtype)
    seconds = {side: {i: [] for i in groups} for side in SIDES}
    for _ in range(args.repeats):
        for side in SIDES:
            for instruction, (s, _) in run(side).items():
                seconds[side][instruction].append(s)
    peak = around(peak_start, matmul_flop_per_s(dtype))

    def figures(keys: list[str | None]) -> dict:
        tokens = sum(len(x) for i in keys for x in ids[i])
        computed = {"whole": tokens,
                    "shared": sum(computed_tokens(ids[i], args.batch_size, args.max_batch_tokens) for i in keys)}
        row = {"texts": sum(len(groups[i]) for i in keys), "tokens": tokens,
               "shared_side_computes_tokens": computed["shared"]}
        wall = {side: [sum(seconds[side][i][r] for i in keys) for r in range(args.repeats)] for side in SIDES}
        for side in SIDES:
            tps = [tokens / s for s in wall[side]]
            row[side] = {"seconds": spread(wall[side]), "text_tokens_per_s": spread(tps),
                         "roofline": roofline(float(np.median([computed[side] / s for s in wall[side]])),
                                              flop_per_token, peak)}
        row["ratio_shared_vs_whole"] = spread([w / s for w, s in zip(wall["whole"], wall["shared"])])
        row["min_cosine"] = float(min(np.min(np.sum(vectors["whole"][i] * vectors["shared"][i], axis=1))
                                      for i in keys))
        return row

    rows = {(i or "documents (no instruction)"): figures([i]) for i in groups}
    rows["all"] = figures(list(groups))
    for name, row in rows.items():
        r = row["ratio_shared_vs_whole"]
        print(f"{name[:50]:50s} x{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}] "
              f"computed {row['shared_side_computes_tokens']}/{row['tokens']} tokens, "
              f"roofline whole {row['whole']['roofline']['fraction_of_roofline']:.2f} "
              f"shared {row['shared']['roofline']['fraction_of_roofline']:.2f}, min cos {row['min_cosine']:.6f}",
              flush=True)
    payload = {"rows": rows, "setup": {
        "model": args.model, "dtype": dtype, "max_length": args.max_length, "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens, "every": args.every, "repeats": args.repeats,
        "workload": "configs/cpu-tiny.yaml evaluate.tasks (subsets, limits, instructions as evaluated), "
                    "one encode call per instruction",
        "roofline_counts": "tokens each side computes (shared: prefix once per batch)",
        "matmul": peak, "loadavg_at_start": os.getloadavg()},
        "command": "python bench/shared_prefix.py " + " ".join(sys.argv[1:])}
    print(f"wrote {write_result('shared_prefix', payload)}")


if __name__ == "__main__":
    main()
