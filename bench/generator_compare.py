"""The CPU generators on one plan: SmolLM2-135M (the demo's) vs Qwen2.5-Coder-1.5B (cpu-quality's).

Both engines get the same requests: the same task definitions (each task type's brainstorm examples, so
no brainstorm step differs), languages of configs/cpu-quality.yaml, placeholders and per-request seeds; each
with its own profile's sampling (cpu-tiny.yaml, cpu-quality.yaml). One after the other on the embedded
llama.cpp server, called directly (the pipeline's cost is bench/generate.py's subject). Per engine:
valid rows per hour, the valid rate, the language check of every valid row (matched / mismatched /
unknown, synth.language) and the reject reasons, the validator's and `wrong_language`.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/generator_compare.py --rows 16
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import write_result  # noqa: E402
from generate import answer  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.synth.config import GenerateConfig  # noqa: E402
from synthembed.synth.embedded import EmbeddedServer  # noqa: E402
from synthembed.synth.language import check_row  # noqa: E402
from synthembed.synth.plan import build_plan, request_row  # noqa: E402
from synthembed.synth.tasks import ASYMMETRIC, SPECS, TASK_TYPES, allocate_counts  # noqa: E402

PROFILES = {"smollm2-135m": ROOT / "configs" / "cpu-tiny.yaml", "qwen2.5-coder-1.5b": ROOT / "configs" / "cpu-quality.yaml"}


def plan_requests(cfg: GenerateConfig, n: int) -> list[dict]:
    pools = {t: list(SPECS[t].brainstorm.examples) for t in ASYMMETRIC}
    plan = build_plan(cfg, allocate_counts(n, {t: 1.0 for t in TASK_TYPES}), pools)
    return [request_row("example", r, cfg, 0, 0) for r in plan]


def ask_and_check(cfg: GenerateConfig, srv: EmbeddedServer, requests: list[dict],
                  bounds: dict) -> tuple[list[tuple[dict, dict, str]], Counter, int]:
    """Every request to `srv`, as many in flight as the pipeline keeps (the server's slots decode them together),
    each validated answer language-checked: ([(request, fields, verdict)], reject reasons with
    `wrong_language` counted, output tokens)."""
    with ThreadPoolExecutor(cfg.engine.in_flight) as pool:
        answers = list(pool.map(lambda r: answer(cfg, srv, r, bounds), requests))
    parsed, reasons, tokens = [], Counter(), 0
    for r, (fields, code, n) in zip(requests, answers):
        tokens += n
        if fields is None:
            reasons[code] += 1
            continue
        row = {**fields, "task_type": r["task_type"], "language": r["language"],
               "src_language": r["src_language"] or None, "tgt_language": r["tgt_language"] or None}
        verdict = check_row(row).verdict
        if verdict == "mismatched":
            reasons["wrong_language"] += 1
        parsed.append((r, fields, verdict))
    return parsed, reasons, tokens


def run_engine(cfg: GenerateConfig, requests: list[dict], bounds: dict, log_dir: Path) -> dict:
    with EmbeddedServer(cfg.engine, log_path=log_dir / f"{cfg.engine.model}.log", startup_timeout_s=300) as srv:
        t0 = time.perf_counter()
        answered, reasons, tokens = ask_and_check(cfg, srv, requests, bounds)
        wall = time.perf_counter() - t0  # includes the checks (milliseconds next to generation)
    languages = Counter(verdict for _, _, verdict in answered)
    valid = len(answered) - languages["mismatched"]
    samples = [{"language": r["language"], "task_type": r["task_type"], "verdict": verdict,
                **{k: (v or "")[:200] for k, v in fields.items()}} for r, fields, verdict in answered[:3]]
    parsed = sum(languages.values())
    return {
        "requests": len(requests), "valid_after_language_check": valid, "wall_s": round(wall, 1),
        "valid_rows_per_hour": round(valid / wall * 3600, 1), "tokens_out_per_s": round(tokens / wall, 2),
        "valid_rate": round(valid / len(requests), 3),
        "language": dict(languages), "language_match_rate": round(languages["matched"] / parsed, 3) if parsed else None,
        "reject_reasons": dict(reasons.most_common()), "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--engines", default=",".join(PROFILES))
    args = parser.parse_args()
    quality = load_config(GenerateConfig, PROFILES["qwen2.5-coder-1.5b"], section="generate")
    requests = plan_requests(quality, args.rows)
    log_dir = ROOT / "runs" / "bench-generator-compare"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in args.engines.split(","):
        cfg = load_config(GenerateConfig, PROFILES[model], section="generate")
        # the requests' schemas carry cpu-quality's length bounds: validate both engines against those
        results[model] = run_engine(cfg, requests, quality.lengths.as_dict(), log_dir)
        r = results[model]
        print(f"{model}: {r['valid_after_language_check']}/{r['requests']} valid, {r['valid_rows_per_hour']} rows/h, "
              f"language match {r['language_match_rate']}, rejects {r['reject_reasons']}", flush=True)
    payload = {"engines": results, "setup": {
        "rows": args.rows, "languages": quality.languages, "task_types": list(TASK_TYPES),
        "tasks": "each task type's brainstorm examples (no brainstorm step)", "threads": 2,
        "sampling": {m: load_config(GenerateConfig, PROFILES[m], section="generate").engine.sampling.model_dump()
                     for m in results}},
        "command": "python bench/generator_compare.py " + " ".join(sys.argv[1:])}
    if len(results) == 2:
        a, b = (results[m] for m in PROFILES)
        payload["qwen_vs_smollm_rows_per_hour"] = (b["valid_rows_per_hour"] / a["valid_rows_per_hour"]
                                                   if a["valid_rows_per_hour"] else None)
    print(f"wrote {write_result('generator_compare', payload)}")


if __name__ == "__main__":
    main()
