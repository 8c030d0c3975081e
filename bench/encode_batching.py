"""Token-budget batches against fixed-count batches, on the texts the demo's evaluation encodes.

Texts: every `--every`-th text of each task in configs/cpu-tiny.yaml `evaluate.tasks` (their subsets and
limits, every split the evaluation encodes), formatted as the evaluation formats them: the task type's
instruction on every text of symmetric tasks, SciFact's on its queries, none on its documents. Same
model, dtype (the `auto` pick), max_length and texts on every side; sides differ only in how the
length-sorted texts are cut into forward passes:

    count-16          16 texts per pass (the demo's `evaluate.model.batch_size`)
    tokens-<T>x<N>    at most N texts and T padded tokens per pass (`model.max_batch_tokens`)

Runs alternate side by side, so drift in machine load hits every side alike; the figure is the ratio of
tokens/s to count-16, with its spread, and the fraction of the matmul roofline in the same dtype.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/encode_batching.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402
from roofline import forward_flop_per_token, matmul_flop_per_s, roofline  # noqa: E402

from synthembed.evaluate.local_tasks import load_folder  # noqa: E402
from synthembed.evaluate.texts import _strings  # noqa: E402
from synthembed.model import Embedder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the instructions mteb hands the evaluation for these tasks (mteb's prompt table, see evaluate/wrapper.py)
INSTRUCTIONS = {
    "stsbenchmark": "Retrieve semantically similar text.",
    "stsb_multi_mt": "Retrieve semantically similar text.",
    "tatoeba": "Retrieve parallel sentences.",
    "banking77": "Given a online banking query, find the corresponding intents",
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
}


def demo_workload(every: int) -> list[tuple[str, str | None]]:
    """(text, instruction) pairs: every `every`-th text of each evaluated task of the demo profile."""
    profile = yaml.safe_load((REPO / "configs" / "cpu-tiny.yaml").read_text())
    pairs: list[tuple[str, str | None]] = []
    for task in profile["evaluate"]["tasks"]:
        folder = (REPO / task["path"]).resolve()
        data = load_folder(folder, limit=task.get("limit"), subsets=task.get("subsets"),
                           corpus_limit=task.get("corpus_limit"), train_limit=task.get("train_limit"))
        name = folder.name
        for splits in data.subsets.values():
            for split, columns in splits.items():
                for key, value in columns.items():
                    if name == "scifact" and key == "corpus":
                        # retrieval documents: raw (instruction on queries only), "title text" as mteb joins them
                        docs = [f"{a} {b}".strip() for a, b in zip(value["title"], value["text"])]
                        pairs += [(t, None) for t in docs[::every]]
                    else:
                        pairs += [(t, INSTRUCTIONS[name]) for t in list(_strings(value, key))[::every]]
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--every", type=int, default=3, help="keep every N-th text of each task")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budgets", default="2048x64,4096x128", help="TOKENSxTEXTS per side")
    args = ap.parse_args()
    pairs = demo_workload(args.every)
    embedder = Embedder.load(args.model, max_length=args.max_length)
    dtype = str(next(embedder.model.parameters()).dtype).removeprefix("torch.")
    texts = [t for t, _ in pairs]
    instructions = [i for _, i in pairs]
    lengths = [len(x) for x in embedder.tokenize(texts, instructions)]
    sides = {"count-16": (16, None)}
    for spec in args.budgets.split(","):
        tokens, items = (int(x) for x in spec.split("x"))
        sides[f"tokens-{tokens}x{items}"] = (items, tokens)

    def run(side: str) -> np.ndarray:
        items, tokens = sides[side]
        return embedder.encode(texts, instructions, batch_size=items, max_batch_tokens=tokens)

    vectors = {side: run(side) for side in sides}  # warm-up, and the vectors compared below
    peak_before = matmul_flop_per_s(dtype)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side in sides:
            start = time.perf_counter()
            run(side)
            seconds[side].append(time.perf_counter() - start)
    peak_after = matmul_flop_per_s(dtype)
    peak = {**peak_before, "flop_per_s": (peak_before["flop_per_s"] + peak_after["flop_per_s"]) / 2}
    flop_per_token = forward_flop_per_token(embedder.model, lengths)
    tokens = sum(lengths)
    rows = {}
    for side in sides:
        tps = [tokens / s for s in seconds[side]]
        ratios = [a / b for a, b in zip(tps, (tokens / s for s in seconds["count-16"]))]
        a, b = vectors[side], vectors["count-16"]
        rows[side] = {"tokens_per_s": spread(tps), "seconds": spread(seconds[side]),
                      "ratio_vs_count16": spread(ratios),
                      "min_cosine_vs_count16": float(np.min(np.sum(a * b, axis=1))),
                      "roofline": roofline(float(np.median(tps)), flop_per_token, peak)}
        print(f"{side}: {np.median(tps):.0f} tok/s, x{np.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}] vs count-16, roofline fraction "
              f"{rows[side]['roofline']['fraction_of_roofline']:.2f}", flush=True)
    payload = {"rows": rows, "setup": {
        "model": args.model, "dtype": dtype, "max_length": args.max_length, "texts": len(texts),
        "tokens": tokens, "mean_tokens": tokens / len(texts), "every": args.every, "repeats": args.repeats,
        "workload": "configs/cpu-tiny.yaml evaluate.tasks (subsets, limits, instructions as evaluated)",
        "matmul": peak, "loadavg_at_start": os.getloadavg()},
        "command": "python bench/encode_batching.py " + " ".join(sys.argv[1:])}
    print(f"wrote {write_result('encode_batching', payload)}")


if __name__ == "__main__":
    main()
