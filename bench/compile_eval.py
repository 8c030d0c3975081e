"""model.compile on the demo's evaluation texts: compiled vs eager inference in one dtype, float32 as reference.

Workload: every `--every`-th text of each task the demo evaluates (bench/encode_batching.demo_workload),
grouped by instruction as the evaluation encodes them (so the shared-prefix path runs), token-budget
batches as the evaluation uses. Sides: `eager` and `compiled` (model.compile: torch.compile at load, every
graph compiled then), both in `--dtype`; runs alternate (eager, compiled, eager, ...) so load drift hits
both. The float32 eager side runs once, for the reference vectors: each side reports the min and median
cosine of its vectors to float32's. `compile_seconds` is the compiled side's load time minus the eager
side's (the one-off price of compiling). The roofline fraction counts every token of every text, the
shared instruction prefixes' too, which inference computes once per batch: an effective rate, above the
work the chip did (bench/encode.py, on texts without instructions, gives the plain fraction).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/compile_eval.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402
from encode_batching import demo_workload  # noqa: E402
from roofline import around, forward_flop_per_token, matmul_flop_per_s, roofline  # noqa: E402

from synthembed.model import Embedder  # noqa: E402

BATCH = {"batch_size": 64, "max_batch_tokens": 4096}  # the evaluation's encode batching (configs/cpu-tiny.yaml)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--every", type=int, default=4, help="every n-th text of the demo's evaluation")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    groups: dict[str | None, list[str]] = defaultdict(list)
    for text, instruction in demo_workload(args.every):
        groups[instruction].append(text)

    def run(embedder: Embedder) -> dict:
        return {ins: embedder.encode(texts, instruction=ins, **BATCH) for ins, texts in groups.items()}

    def load(**kw) -> tuple[Embedder, float]:
        start = time.perf_counter()
        return Embedder.load(args.model, **kw), time.perf_counter() - start

    reference, _ = load(dtype="float32")
    ref = run(reference)
    lengths = [len(ids) for ins, texts in groups.items() for ids in reference.tokenize(texts, ins)]
    del reference

    peak_start = matmul_flop_per_s(args.dtype)
    sides = {}
    sides["eager"], eager_load = load(dtype=args.dtype)
    sides["compiled"], compiled_load = load(dtype=args.dtype, compile=True)
    run(sides["eager"])  # warm-up (the compiled side warmed up at load)
    times: dict[str, list[float]] = {name: [] for name in sides}
    vectors = {}
    for _ in range(args.repeats):
        for name, embedder in sides.items():
            start = time.perf_counter()
            vectors[name] = run(embedder)
            times[name].append(time.perf_counter() - start)
    peak = around(peak_start, matmul_flop_per_s(args.dtype))

    tokens = sum(lengths)
    flop_per_token = forward_flop_per_token(sides["eager"].model, lengths)
    rows = {}
    for name in sides:
        cos = np.concatenate([np.sum(vectors[name][k] * ref[k], axis=1) for k in ref])
        tps = [tokens / t for t in times[name]]
        rows[name] = {"seconds": spread(times[name]), "tokens_per_s": spread(tps),
                      "roofline": roofline(float(np.median(tps)), flop_per_token, peak),
                      "cosine_to_float32": {"min": float(cos.min()), "median": float(np.median(cos))}}
    ratios = [e / c for e, c in zip(times["eager"], times["compiled"])]
    payload = {"rows": rows, "ratio_compiled_vs_eager": spread(ratios),
               "compile_seconds": round(compiled_load - eager_load, 1),
               "setup": {"model": args.model, "dtype": args.dtype, "texts": len(lengths), "tokens": tokens,
                         "instructions": len(groups), "every": args.every, "repeats": args.repeats, **BATCH},
               "command": "python bench/compile_eval.py " + " ".join(sys.argv[1:])}
    path = write_result("compile_eval", payload)
    for name, r in rows.items():
        print(f"{name}: {r['tokens_per_s']['median']:.0f} tok/s, roofline fraction "
              f"{r['roofline']['fraction_of_roofline']:.2f}, cosine to fp32 min {r['cosine_to_float32']['min']:.4f} "
              f"median {r['cosine_to_float32']['median']:.5f}")
    print(f"compiled / eager {payload['ratio_compiled_vs_eager']['median']:.2f}x "
          f"[{min(ratios):.2f}-{max(ratios):.2f}], compile {payload['compile_seconds']} s; wrote {path}")


if __name__ == "__main__":
    main()
