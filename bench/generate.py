"""Benchmark: the same generation requests through (a) the Ray Data pipeline and (b) the engine called directly.

Engine: the embedded one of configs/cpu-tiny.yaml (SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible
server, JSON-schema guided). Both sides send identical requests (same prompts, schemas and per-request
seeds) to the same server, so they generate the same tokens; the ratio measures what the pipeline costs
(Ray Data scheduling, the ray.data.llm HTTP stage, validation on workers, streaming to the driver), including
its actor start-up. The valid-example rate is the share of requests whose output passes the validator.

    flock /tmp/synthembed-bench.lock flock /tmp/synthembed-ray.lock .venv/bin/python bench/generate.py [--rows 24 --repeats 2]

Writes bench/results/generate.json: ratio (pipeline / direct examples per second), valid_rate, throughputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "bench"))

from common import spread, write_result  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.synth.config import GenerateConfig  # noqa: E402
from synthembed.synth.embedded import EmbeddedServer  # noqa: E402
from synthembed.synth.engines import apply_engine, chat_payload, post_chat, request_dataset  # noqa: E402
from synthembed.synth.parse import Rejected, parse_json_object, validate_example  # noqa: E402
from synthembed.synth.plan import build_plan, request_row  # noqa: E402
from synthembed.synth.transport import settle_chat  # noqa: E402
from synthembed.synth.validate import Validate  # noqa: E402
from synthembed.synth.tasks import ASYMMETRIC, SPECS, TASK_TYPES, allocate_counts  # noqa: E402


# Reasons that mean the output was not a well-formed example object (vs. content checks such as no_text).
STRUCTURAL = {"engine_error", "truncated", "not_json", "not_object", "missing_keys", "unexpected_keys", "not_string"}


def make_requests(cfg: GenerateConfig, n: int) -> list[dict]:
    # Fixed task definitions (the brainstorm prompts' own examples) so both sides see identical prompts.
    pools = {t: list(SPECS[t].brainstorm.examples) for t in ASYMMETRIC}
    counts = allocate_counts(n, {t: 1.0 for t in TASK_TYPES})
    plan = build_plan(cfg.model_copy(update={"languages": ["English", "German", "French", "Spanish", "Japanese",
                                                           "Russian", "Swahili", "Chinese (Simplified)"]}),
                      counts, pools)
    return [request_row("example", r, cfg, 0, 0) for r in plan]


def answer(cfg: GenerateConfig, srv: EmbeddedServer, request: dict, bounds: dict) -> tuple[dict | None, str | None, int]:
    """One planned example request straight to the embedded server, no Ray: (fields, None, tokens out) when
    the answer validates, else (None, reject code, tokens out); tokens count for rejected answers too."""
    payload = chat_payload(cfg.engine, srv.alias, json.loads(request["messages"]), json.loads(request["schema"]),
                           request["seed"])
    out = settle_chat(post_chat(srv.base_url, payload))
    try:
        if out["error"]:
            raise Rejected("engine_error", out["error"])
        fields = validate_example(request["task_type"], parse_json_object(out["text"], out["finish_reason"]),
                                  json.loads(request["placeholders"]), bounds)
    except Rejected as rej:
        return None, rej.code, out["tokens_out"]
    return fields, None, out["tokens_out"]


def direct(cfg: GenerateConfig, srv: EmbeddedServer, requests: list[dict]) -> dict:
    """The requests sent straight to the server, as many in flight as the pipeline keeps (its slots)."""
    bounds = cfg.lengths.as_dict()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.engine.in_flight) as pool:
        outs = list(pool.map(lambda r: answer(cfg, srv, r, bounds), requests))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "valid": sum(f is not None for f, _, _ in outs), "tokens_out": sum(n for _, _, n in outs),
            "schema_valid": sum(c not in STRUCTURAL for _, c, _ in outs),
            "rejects": dict(Counter(c for _, c, _ in outs if c is not None))}


def with_rates(r: dict, requests: int) -> dict:
    """A side's counts plus its rates per second of wall time."""
    return {**r, "examples_per_s": r["valid"] / r["wall_s"], "requests_per_s": requests / r["wall_s"],
            "tokens_out_per_s": r["tokens_out"] / r["wall_s"]}


def pipeline(cfg: GenerateConfig, srv: EmbeddedServer | None, requests: list[dict]) -> dict:
    """The Ray Data side: `apply_engine` (srv: the embedded server; None for kind=vllm, whose engine the
    processor starts itself, so its start-up is inside this wall time)."""
    t0 = time.perf_counter()
    url, alias = (srv.base_url, srv.alias) if srv else (None, None)
    ds = apply_engine(request_dataset(requests, cfg.engine), cfg.engine, url, alias).map(
        Validate(cfg.engine.label, 0, False, cfg.lengths.as_dict(), metrics=False))
    valid = tokens = structural_fail = 0
    for row in ds.iter_rows():
        rec = json.loads(row["payload"])
        tokens += int(rec.get("tokens_out") or 0)
        valid += row["kind"] == "example"
        if row["kind"] == "reject":
            structural_fail += rec["reason"].split(":")[0] in STRUCTURAL
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "valid": valid, "tokens_out": tokens, "schema_valid": len(requests) - structural_fail}


def cpu_seconds(engine_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the engine process, this driver, and every other process (Ray's)."""
    import psutil

    out = {"engine": 0.0, "driver": 0.0, "other": 0.0}
    for p in psutil.process_iter():
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        key = "engine" if p.pid == engine_pid else "driver" if p.pid == os.getpid() else "other"
        out[key] += t.user + t.system
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--engine", choices=["embedded", "vllm"], default="embedded",
                    help="vllm: configs/cpu-vllm.yaml through .venv-vllm (bench/generate_vllm.py)")
    ap.add_argument("--vllm-side", choices=["direct", "pipeline"], help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine == "vllm":
        import generate_vllm

        return generate_vllm.main(args)
    load_start = os.getloadavg()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(GenerateConfig, ROOT / "configs" / "cpu-tiny.yaml", section="generate")
    requests = make_requests(cfg, args.rows)
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    results = {"direct": [], "pipeline": []}
    with EmbeddedServer(cfg.engine) as srv:
        post_chat(srv.base_url, chat_payload(cfg.engine, srv.alias, [{"role": "user", "content": "hi"}], None, 0))
        for rep in range(args.repeats):  # interleaved, so load changes hit both sides alike
            for side, fn in (("direct", direct), ("pipeline", pipeline)):
                before = cpu_seconds(srv.proc.pid)
                r = fn(cfg, srv, requests)
                after = cpu_seconds(srv.proc.pid)
                r = with_rates(r, len(requests))
                r["cpu_s"] = {k: round(after[k] - before[k], 2) for k in before}
                results[side].append(r)
                print(f"rep {rep} {side:8s} wall {r['wall_s']:6.1f}s  valid {r['valid']}/{len(requests)}  "
                      f"{r['examples_per_s']:.3f} ex/s  {r['tokens_out_per_s']:.1f} tok/s  cpu s {r['cpu_s']}",
                      flush=True)
    ray.shutdown()

    def med(side, key):
        return statistics.median(r[key] for r in results[side])

    ratio = med("pipeline", "requests_per_s") / med("direct", "requests_per_s")
    attempts = sum(len(requests) for side in results for _ in results[side])
    valid_rate = sum(r["valid"] for side in results for r in results[side]) / attempts
    print("\n| side | wall s (median) | requests/s | examples/s | output tok/s | valid |")
    print("|---|---|---|---|---|---|")
    for side in ("direct", "pipeline"):
        print(f"| {side} | {med(side, 'wall_s'):.1f} | {med(side, 'requests_per_s'):.3f} | "
              f"{med(side, 'examples_per_s'):.3f} | {med(side, 'tokens_out_per_s'):.1f} | "
              f"{sum(r['valid'] for r in results[side])}/{len(requests) * len(results[side])} |")
    schema_valid_rate = sum(r["schema_valid"] for side in results for r in results[side]) / attempts
    print(f"\nratio (pipeline / direct, requests/s) = {ratio:.3f}   valid_rate = {valid_rate:.3f}   "
          f"schema_valid_rate = {schema_valid_rate:.3f}")
    path = write_result("generate", {
        "ratio": ratio,
        "valid_rate": valid_rate,
        "valid_rate_note": "valid_rate = passes the full validator (incl. content checks such as no_text); "
                           "schema_valid_rate = well-formed JSON object with exactly the task's keys",
        "schema_valid_rate": schema_valid_rate,
        "rows": len(requests), "repeats": args.repeats,
        "engine": cfg.engine.label, "guided_decoding": cfg.engine.resolved_response_format(),
        "max_tokens": cfg.engine.sampling.max_tokens, "lengths": cfg.lengths.model_dump(),
        "direct": {k: spread([r[k] for r in results["direct"]]) for k in
                   ("wall_s", "requests_per_s", "examples_per_s", "tokens_out_per_s")},
        "pipeline": {k: spread([r[k] for r in results["pipeline"]]) for k in
                     ("wall_s", "requests_per_s", "examples_per_s", "tokens_out_per_s")},
        "loadavg_at_start": load_start,
        "same_tokens_both_sides": [r["tokens_out"] for r in results["direct"]] == [r["tokens_out"] for r in results["pipeline"]],
        "cpu_seconds": {side: [r["cpu_s"] for r in results[side]] for side in results},
        "cpu_seconds_note": "CPU seconds per repeat used by the engine process, the benchmark driver and all other "
                            "processes (Ray's workers, raylet, GCS); the engine shares the 2 cores with the rest",
        "command": "flock /tmp/synthembed-bench.lock flock /tmp/synthembed-ray.lock .venv/bin/python bench/generate.py "
                   + " ".join(sys.argv[1:]),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
