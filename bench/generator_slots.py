"""How many requests the quality generator (Qwen2.5-Coder-1.5B on llama-server) should decode together.

llama-server decodes its slots in one batch: at batch 1 a 2-core CPU re-reads the ~1 GB of Q4_K weights for
every token, so extra slots ride on the same weight reads until the arithmetic, not the memory, is the limit.
Each side is configs/cpu-quality.yaml with `engine.batch_size` = its slot count (the pipeline keeps that many
requests in flight, `parallel` follows it). Same plan requests, seeds and sampling on every side, sides
interleaved per repeat; figures: valid rows per hour after the language check, output tokens per second,
valid rate (more slots must not cost validity).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/generator_slots.py --slots 2,4 --rows 12 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import spread, write_result  # noqa: E402
from generator_compare import PROFILES, plan_requests, run_engine  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.synth.config import GenerateConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", default="2,4")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_start = os.getloadavg()
    base = load_config(GenerateConfig, PROFILES["qwen2.5-coder-1.5b"], section="generate")
    requests = plan_requests(base, args.rows)
    log_dir = ROOT / "runs" / "bench-generator-slots"
    log_dir.mkdir(parents=True, exist_ok=True)
    slots = [int(s) for s in args.slots.split(",")]
    runs: dict[int, list[dict]] = {n: [] for n in slots}
    for rep in range(args.repeats):
        for n in slots:
            engine = base.engine.model_copy(update={"batch_size": n, "concurrency": 1, "parallel": None})
            r = run_engine(base.model_copy(update={"engine": engine}), requests, base.lengths.as_dict(), log_dir)
            runs[n].append(r)
            print(f"rep {rep} slots {n}: {r['valid_after_language_check']}/{r['requests']} valid, "
                  f"{r['valid_rows_per_hour']} rows/h, {r['tokens_out_per_s']} tok/s, wall {r['wall_s']} s", flush=True)

    def med(n: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[n])

    first = slots[0]
    payload = {
        "sides": {f"slots_{n}": {
            "valid_rows_per_hour": spread([r["valid_rows_per_hour"] for r in runs[n]]),
            "tokens_out_per_s": spread([r["tokens_out_per_s"] for r in runs[n]]),
            "wall_s": spread([r["wall_s"] for r in runs[n]]),
            "valid_rate": statistics.mean(r["valid_rate"] for r in runs[n]),
            "language_match_rate": [r["language_match_rate"] for r in runs[n]],
            "reject_reasons": [r["reject_reasons"] for r in runs[n]]} for n in slots},
        "ratio_vs_first": {f"slots_{n}": {
            "valid_rows_per_hour": med(n, "valid_rows_per_hour") / med(first, "valid_rows_per_hour"),
            "tokens_out_per_s": med(n, "tokens_out_per_s") / med(first, "tokens_out_per_s")} for n in slots[1:]},
        "rows": args.rows, "repeats": args.repeats, "threads": base.engine.n_threads, "engine": base.engine.label,
        "sampling": base.engine.sampling.model_dump(), "loadavg_at_start": load_start,
        "command": "python bench/generator_slots.py " + " ".join(sys.argv[1:]),
    }
    print(payload["ratio_vs_first"])
    print(f"wrote {write_result('generator_slots', payload)}")


if __name__ == "__main__":
    main()
