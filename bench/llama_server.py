"""Benchmark: the embedded engine's server, llama.cpp's `llama-server` (slots decoded together) against
llama-cpp-python's `python -m llama_cpp.server` (the server it replaced), on the same requests.

Both sides get the planned example requests of configs/cpu-tiny.yaml (same prompts, JSON schemas, seeds and
sampling) with as many in flight as the pipeline keeps (engine batch_size x concurrency = 4), 2 threads each,
interleaved repeats. Sampling differs between the two implementations, so the tokens differ: the figures are
output tokens per second and validated examples per second; the valid rate says the output is as usable.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/llama_server.py [--rows 16 --repeats 2]

The llama_cpp.server side needs llama-cpp-python, which set-up no longer installs (it is a ~8-minute source
build): `.venv/bin/pip install --no-deps 'llama-cpp-python[server]==0.3.36' sse-starlette starlette-context
pydantic-settings`. Writes bench/results/llama_server.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "bench"))

from common import spread, write_result  # noqa: E402
from generate import answer, direct, make_requests, with_rates  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.synth.config import GenerateConfig  # noqa: E402
from synthembed.synth.embedded import EmbeddedServer, _free_port, gguf_for  # noqa: E402


class PythonServer:
    """llama-cpp-python's server, started the way the embedded engine started it before llama-server."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg, self.alias, self.port = cfg, cfg.engine.model, _free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        e = self.cfg.engine
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_for(e.model)), "--model_alias", self.alias,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(e.n_ctx), "--n_threads", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.base_url + "/models", timeout=2).read()
                return self
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("llama_cpp.server did not start: is llama-cpp-python[server] installed?")
                time.sleep(0.3)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    load_start = os.getloadavg()
    cfg = load_config(GenerateConfig, ROOT / "configs" / "cpu-tiny.yaml", section="generate")
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"n_threads": 2})})
    in_flight = cfg.engine.in_flight
    requests = make_requests(cfg, args.rows)
    sides = {"llama_cpp.server": lambda: PythonServer(cfg), f"llama-server --parallel {in_flight}": lambda: EmbeddedServer(cfg.engine)}
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for rep in range(args.repeats):  # interleaved, so load changes hit both sides alike
        for side, start in sides.items():
            with start() as srv:
                answer(cfg, srv, requests[0], cfg.lengths.as_dict())  # warm-up, not timed
                r = with_rates(direct(cfg, srv, requests), len(requests))
            results[side].append(r)
            print(f"rep {rep} {side:28s} wall {r['wall_s']:6.1f}s valid {r['valid']}/{len(requests)} "
                  f"{r['tokens_out_per_s']:.1f} tok/s {r['examples_per_s']:.3f} ex/s", flush=True)

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    old, new = sides
    keys = ("wall_s", "tokens_out_per_s", "examples_per_s", "requests_per_s")
    payload = {
        "speedup_tokens_out_per_s": med(new, "tokens_out_per_s") / med(old, "tokens_out_per_s"),
        "speedup_examples_per_s": med(new, "examples_per_s") / med(old, "examples_per_s"),
        "speedup_requests_per_s": med(new, "requests_per_s") / med(old, "requests_per_s"),
        "rows": len(requests), "repeats": args.repeats, "in_flight": in_flight, "threads": 2,
        "engine": cfg.engine.label, "max_tokens": cfg.engine.sampling.max_tokens, "lengths": cfg.lengths.model_dump(),
        "sides": {s: {**{k: spread([r[k] for r in results[s]]) for k in keys},
                      "valid_rate": sum(r["valid"] for r in results[s]) / (len(requests) * len(results[s])),
                      "schema_valid_rate": sum(r["schema_valid"] for r in results[s]) / (len(requests) * len(results[s])),
                      "rejects_per_repeat": [r["rejects"] for r in results[s]]}
                  for s in sides},
        "loadavg_at_start": load_start,
    }
    print({k: round(v, 3) for k, v in payload.items() if k.startswith("speedup")})
    print(f"wrote {write_result('llama_server', payload)}")


if __name__ == "__main__":
    main()
