"""`bench/generate.py --engine vllm`: the Ray Data vLLM pipeline vs vLLM's `LLM.chat` called directly, and
llama.cpp (the embedded engine) on the same requests, in one script run.

    flock /tmp/synthembed-bench.lock flock /tmp/synthembed-ray.lock .venv/bin/python bench/generate.py --engine vllm

This process (in .venv) builds the requests from configs/cpu-vllm.yaml, then runs, interleaved per repeat:
- `direct`: a .venv-vllm child creates `vllm.LLM` and calls `chat` once with every request's prompt,
  schema-guided sampling and seed (what vLLM alone does; its engine start-up is timed separately);
- `pipeline`: a .venv-vllm child runs `engines.apply_engine` (ray.data.llm's vLLM processor) on a local Ray
  cluster: what a generate job does, with the processor starting its engine;
- `llama.cpp`: the embedded engine of configs/cpu-tiny.yaml called directly, same prompts and seeds.
Both vLLM sides include their engine start in `wall_s` (a job pays it once), so the ratio compares jobs;
`generate_s` and tokens/s without the start-up are given for `direct`.

Writes bench/results/generate_vllm.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


def _score(r: dict, text: str, finish_reason: str | None, bounds) -> str:
    from generate import STRUCTURAL
    from synthembed.synth.parse import Rejected, parse_json_object, validate_example

    try:
        validate_example(r["task_type"], parse_json_object(text, finish_reason), json.loads(r["placeholders"]), bounds)
        return "valid"
    except Rejected as rej:
        return "structural" if rej.code in STRUCTURAL else "content"


def _direct_vllm(cfg, requests: list[dict]) -> dict:
    os.environ.update(cfg.engine.env)
    t0 = time.perf_counter()  # the import counts: the pipeline's engine actor pays it too
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from synthembed.synth.engines import vllm_model_source

    s = cfg.engine.sampling
    llm = LLM(model=vllm_model_source(cfg.engine.model), **cfg.engine.engine_kwargs)
    started = time.perf_counter()
    params = [SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=int(r["seed"]),
                             structured_outputs=StructuredOutputsParams(json=r["schema"])) for r in requests]
    outs = llm.chat([json.loads(r["messages"]) for r in requests], params, use_tqdm=False)
    end = time.perf_counter()
    verdicts = [_score(r, o.outputs[0].text, o.outputs[0].finish_reason, cfg.lengths.as_dict())
                for r, o in zip(requests, outs)]
    return {"wall_s": end - t0, "engine_start_s": started - t0, "generate_s": end - started,
            "tokens_out": sum(len(o.outputs[0].token_ids) for o in outs), "valid": verdicts.count("valid"),
            "schema_valid": len(requests) - verdicts.count("structural"),
            "finish_reasons": dict(Counter(o.outputs[0].finish_reason for o in outs))}


def _pipeline_vllm(cfg, requests: list[dict]) -> dict:
    import ray

    from generate import pipeline

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        # Half the requests, then all of them, each with its own processor (and engine start): the
        # difference is generation alone, start-up cancelled out (marginal tokens/s).
        half = pipeline(cfg, None, requests[: len(requests) // 2])
        full = pipeline(cfg, None, requests)
        return {**full, "half": half,
                "marginal_tokens_out_per_s": (full["tokens_out"] - half["tokens_out"]) / (full["wall_s"] - half["wall_s"])}
    finally:
        ray.shutdown()


def _side(side: str, requests_path: Path, out: Path) -> None:
    """Child entry (in .venv-vllm): one side, one run, written to `out`."""
    from synthembed.config import load_config
    from synthembed.synth.config import GenerateConfig

    cfg = load_config(GenerateConfig, ROOT / "configs" / "cpu-vllm.yaml", section="generate")
    requests = json.loads(requests_path.read_text())
    result = (_direct_vllm if side == "direct" else _pipeline_vllm)(cfg, requests)
    import vllm

    out.write_text(json.dumps({**result, "vllm": vllm.__version__}))


def _run_child(side: str, requests_path: Path, tmp: Path) -> dict:
    out = tmp / f"{side}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=f"{ROOT / 'bench'}")
    proc = subprocess.run([str(VLLM_PY), str(ROOT / "bench" / "generate.py"), "--engine", "vllm", "--vllm-side", side,
                           "--requests", str(requests_path), "--out", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads(out.read_text())


def main(args) -> None:
    if args.vllm_side:
        return _side(args.vllm_side, args.requests, args.out)
    import tempfile

    from common import spread, write_result
    from generate import direct, make_requests
    from synthembed.config import load_config
    from synthembed.synth.config import GenerateConfig
    from synthembed.synth.embedded import EmbeddedServer

    if not VLLM_PY.exists():
        raise SystemExit(f"{VLLM_PY} is missing: run `make setup-vllm` first")
    load_start = os.getloadavg()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(GenerateConfig, ROOT / "configs" / "cpu-vllm.yaml", section="generate")
    tiny = load_config(GenerateConfig, ROOT / "configs" / "cpu-tiny.yaml", section="generate")
    requests = make_requests(cfg, args.rows)
    results: dict[str, list[dict]] = {"direct": [], "pipeline": [], "llama.cpp": []}
    with tempfile.TemporaryDirectory() as tmp:
        req_path = Path(tmp) / "requests.json"
        req_path.write_text(json.dumps(requests))
        for rep in range(args.repeats):  # interleaved, so load changes hit every side alike
            for side in ("direct", "pipeline"):
                r = _run_child(side, req_path, Path(tmp))
                r["requests_per_s"] = len(requests) / r["wall_s"]
                r["tokens_out_per_s"] = r["tokens_out"] / r["wall_s"]
                results[side].append(r)
                print(f"rep {rep} {side:9s} wall {r['wall_s']:6.1f}s valid {r['valid']}/{len(requests)} "
                      f"{r['tokens_out_per_s']:.1f} tok/s", flush=True)
            with EmbeddedServer(tiny.engine) as srv:
                r = direct(tiny, srv, requests)
            r["requests_per_s"] = len(requests) / r["wall_s"]
            r["tokens_out_per_s"] = r["tokens_out"] / r["wall_s"]
            results["llama.cpp"].append(r)
            print(f"rep {rep} llama.cpp wall {r['wall_s']:6.1f}s valid {r['valid']}/{len(requests)} "
                  f"{r['tokens_out_per_s']:.1f} tok/s", flush=True)

    def med(side, key):
        return statistics.median(r[key] for r in results[side])

    job_ratio = med("pipeline", "requests_per_s") / med("direct", "requests_per_s")
    direct_gen_tps = [r["tokens_out"] / r["generate_s"] for r in results["direct"]]
    pipe_marginal = [r["marginal_tokens_out_per_s"] for r in results["pipeline"]]
    ratio = statistics.median(pipe_marginal) / statistics.median(direct_gen_tps)
    print(f"\nratio (generation tokens/s: pipeline marginal / direct) = {ratio:.3f}; "
          f"whole job incl. engine start-up (requests/s) = {job_ratio:.3f}")
    print(f"tokens/s: vLLM direct (generation only) {statistics.median(direct_gen_tps):.1f}, "
          f"llama.cpp direct {med('llama.cpp', 'tokens_out_per_s'):.1f}")
    keys = ("wall_s", "requests_per_s", "tokens_out_per_s", "valid")
    path = write_result("generate_vllm", {
        "executed": True,
        "vllm": results["direct"][0]["vllm"],
        "ratio": ratio,
        "ratio_note": "generation throughput, engine start-up excluded on both sides: pipeline = marginal output "
                      "tokens/s between a run of half the requests and a run of all (each its own processor), "
                      "direct = output tokens / LLM.chat time; same prompts, schemas, seeds and sampling",
        "ratio_job_including_startup": job_ratio,
        "ratio_job_note": "requests/s of one whole run of all requests, each side starting its engine (and "
                          "importing vLLM) inside wall_s; the pipeline also starts Ray Data's actors",
        "rows": len(requests), "repeats": args.repeats, "engine": cfg.engine.label,
        "engine_kwargs": cfg.engine.engine_kwargs, "max_tokens": cfg.engine.sampling.max_tokens,
        "direct": {**{k: spread([r[k] for r in results["direct"]]) for k in keys + ("engine_start_s", "generate_s")},
                   "tokens_out_per_s_generation_only": spread(direct_gen_tps),
                   "finish_reasons": [r["finish_reasons"] for r in results["direct"]]},
        "pipeline": {**{k: spread([r[k] for r in results["pipeline"]]) for k in keys},
                     "marginal_tokens_out_per_s": spread(pipe_marginal),
                     "half_wall_s": spread([r["half"]["wall_s"] for r in results["pipeline"]])},
        "llama_cpp": {**{k: spread([r[k] for r in results["llama.cpp"]]) for k in keys}, "engine": tiny.engine.label},
        "cpu_engine_choice": "tokens_out_per_s of llama.cpp direct vs vLLM direct generation-only, same prompts",
        "loadavg_at_start": load_start,
        "command": "flock /tmp/synthembed-bench.lock flock /tmp/synthembed-ray.lock .venv/bin/python bench/generate.py "
                   + " ".join(sys.argv[1:]),
    })
    print(f"wrote {path}")
