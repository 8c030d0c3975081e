"""Does a topic per request make a small generator's sts and bitext rows varied? `generate.symmetric_topics`
off vs on, same plan rows otherwise (languages, placeholders, seeds: only the topic line differs).

The paper's prompts for the symmetric types carry no topic. Qwen2.5-Coder-1.5B answers them with a few stock
sentences: 23 of the 44 English STS rows of the 720-request quality plan open with "The quick brown fox".
The topics are English; the prompt line says they do not set the language (PROMPT_VERSION v3), because
without it a third of the bitext sources came back in English. `wrong_language_by_type` shows whether the
topic side still loses more rows to the language check than the side without topics.
Per side: valid rows (validator + language check), distinct queries, the most common 4-word opening and how
many rows have it (synth.stats.query_diversity), output tokens per second. Qwen2.5-Coder-1.5B on
llama-server as configs/cpu-quality.yaml runs it (4 slots, 2 threads).

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/symmetric_topics.py --rows 80
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import write_result  # noqa: E402
from generator_compare import ask_and_check  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.synth.config import GenerateConfig  # noqa: E402
from synthembed.synth.embedded import EmbeddedServer  # noqa: E402
from synthembed.synth.plan import build_plan, request_row  # noqa: E402
from synthembed.synth.stats import query_diversity  # noqa: E402
from synthembed.synth.tasks import allocate_counts  # noqa: E402


def side(cfg: GenerateConfig, srv: EmbeddedServer, rows: list[dict]) -> dict:
    requests = [request_row("example", r, cfg, 0, 0) for r in rows]
    answered, reasons, tokens = ask_and_check(cfg, srv, requests, cfg.lengths.as_dict())
    kept = [(r["task_type"], r["language"], fields[list(fields)[0]])
            for r, fields, verdict in answered if verdict != "mismatched"]
    english_sts = [q for t, lang, q in kept if t == "sts" and lang == "English"]
    # per type: answers that passed validation, and those of them the language check flagged
    checked = Counter(r["task_type"] for r, _, _ in answered)
    flagged = Counter(r["task_type"] for r, _, verdict in answered if verdict == "mismatched")
    return {"requests": len(rows), "valid": len(kept), "reject_reasons": dict(reasons), "tokens_out": tokens,
            "wrong_language_by_type": {t: f"{flagged[t]}/{checked[t]}" for t in sorted(checked)},
            "query_diversity": query_diversity([t for t, _, _ in kept], [q for _, _, q in kept]),
            "english_sts_queries": english_sts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=24, help="requests per side, sts and bitext in the paper's ratio")
    args = parser.parse_args()
    cfg = load_config(GenerateConfig, ROOT / "configs" / "cpu-quality.yaml", section="generate")
    cfg = cfg.model_copy(update={"symmetric_topics": False})
    counts = allocate_counts(args.rows, {"sts": cfg.task_mix["sts"], "bitext": cfg.task_mix["bitext"]})
    plans = {name: build_plan(cfg.model_copy(update={"symmetric_topics": on}), counts, {})
             for name, on in (("off", False), ("on", True))}
    results = {}
    (ROOT / "runs").mkdir(exist_ok=True)
    log_path = ROOT / "runs" / "bench-symmetric-topics.log"
    with EmbeddedServer(cfg.engine, log_path=log_path, startup_timeout_s=300) as srv:
        for name, rows in plans.items():  # one server for both sides: same process, same warm caches
            t0 = time.perf_counter()
            results[name] = side(cfg, srv, rows)
            results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            results[name]["tokens_out_per_s"] = round(results[name]["tokens_out"] / results[name]["wall_s"], 2)
            r = results[name]
            print(f"topics {name}: {r['valid']}/{r['requests']} valid, {r['query_diversity']}, "
                  f"wrong language by type {r['wrong_language_by_type']}, {r['wall_s']} s",
                  flush=True)
    payload = {"sides": results, "counts": counts, "engine": cfg.engine.label, "slots": cfg.engine.in_flight,
               "languages": cfg.languages, "command": "python bench/symmetric_topics.py " + " ".join(sys.argv[1:])}
    print(f"wrote {write_result('symmetric_topics', payload)}")


if __name__ == "__main__":
    main()
