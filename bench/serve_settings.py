"""Which process settings make the served path fastest on 2 cores: one Ray cluster per setting, same load.

On a 2-core machine the load generator, Serve's HTTP proxy and the replica (an event loop plus the torch
threads) share the cores, so how they share them decides throughput more than the forward pass does. Each
setting starts a fresh local Ray with its environment (what `ray start` would get), deploys the
cpu-tiny `serve:` section (smollm2-135m, dtype auto) and runs three closed-loop points: short (~16 tokens)
at c=1 and c=32, long (~256 tokens) at c=32. Beside throughput it records the CPU seconds each process
spent per input (client, proxy, replica, Ray's own daemons), from /proc, so the cost moves are visible.
The in-process ceiling (Embedder.encode, batch 32) is measured in the same child before its Ray starts,
and so is the chip's matmul rate in the serving dtype (again after the points): each side's achieved
FLOP/s at c=32 long is reported as a fraction of it (bench/roofline.py).
Settings run in rounds (A B C ... A B C ...) so slow drift of the machine hits them alike.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/serve_settings.py [--rounds 2] [--only a,b]

`--baseline REV` adds the default setting run on the code of git revision REV (a worktree put first on the
child's PYTHONPATH, which Ray's workers inherit), so a change to the serving code is measured against its
predecessor in one script run:

    .venv/bin/python bench/serve_settings.py --only default --baseline 88272a8 --name serve_batcher
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# name -> (environment of the whole cluster, serve-section overrides)
SETTINGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default": ({}, []),
    # libgomp's idle threads spin ~for a while after each parallel region; PASSIVE makes them sleep, which
    # frees the core for the proxy and the event loop between batches
    "omp_passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    # Serve's own throughput switches (Ray 2.60 constants.py), without direct ingress: user code and the
    # router on the replica's main loop, proxy->replica over gRPC
    "serve_main_loop_grpc": ({"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                              "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
                              "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}, []),
}
POINTS = {"short/c1": ("short", 1, 24), "short/c32": ("short", 32, 128), "long/c32": ("long", 32, 64)}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process, grouped by role."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            stat = (pid_dir / "stat").read_text()
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / tick
        if int(pid_dir.name) == me:
            role = "client"
        elif "ServeReplica" in cmd:
            role = "replica"
        elif "ProxyActor" in cmd:
            role = "proxy"
        elif "ServeController" in cmd:
            role = "controller"
        elif any(k in cmd for k in ("raylet", "gcs_server", "ray/dashboard", "log_monitor", "runtime_env",
                                    "ray/_private", "monitor.py")):
            role = "ray_daemons"
        else:
            continue
        out[role] = out.get(role, 0.0) + secs
    return out


def one(name: str) -> dict:
    """Child: measure one setting (its environment is already this process's)."""
    import ray
    import torch
    from ray import serve
    from roofline import around, forward_flop_per_token, matmul_flop_per_s, roofline
    from serve import closed_loop, make_texts, wait_ready

    from synthembed.config import load_config
    from synthembed.model import Embedder
    from synthembed.model.precision import inference_dtype
    from synthembed.serve import ServeConfig, deploy

    torch.set_num_threads(2)
    cfg = load_config(ServeConfig, REPO / "configs" / "cpu-tiny.yaml",
                      ["serve.model.source=smollm2-135m", "serve.app_name=bench", "serve.route_prefix=/bench",
                       *SETTINGS.get(name, ({}, []))[1]], section="serve")
    embedder = Embedder.load(cfg.model)
    texts = {"short": make_texts(embedder.tokenizer, 128, 16, seed=0),
             "long": make_texts(embedder.tokenizer, 64, 256, seed=1)}
    embedder.encode(texts["short"][:4])
    in_process = {}
    for length in texts:
        start = time.perf_counter()
        embedder.encode(texts[length], batch_size=32)
        in_process[length] = len(texts[length]) / (time.perf_counter() - start)
    dtype = str(inference_dtype(cfg.model.dtype, torch.device("cpu"))).removeprefix("torch.")
    # the chip's matmul rate in the serving dtype, measured here (same load) and again after the points
    peak_start = matmul_flop_per_s(dtype)
    lengths = {k: [len(x) for x in embedder.tokenize(v, max_length=512)] for k, v in texts.items()}
    tokens_per_input = {k: sum(v) / len(v) for k, v in lengths.items()}
    flop = {k: forward_flop_per_token(embedder.model, v) for k, v in lengths.items()}
    del embedder

    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-settings-"))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=str(workdir / "ray"))
    try:
        url = deploy(cfg) + "/v1/embeddings"
        wait_ready(url, {"input": texts["short"][:4]}, 180)
        asyncio.run(closed_loop(url, texts["short"][:32], 32, cfg.model_name))  # warm-up
        points = {}
        for key, (length, c, n) in POINTS.items():
            before = cpu_seconds()
            res = asyncio.run(closed_loop(url, texts[length][:n], c, cfg.model_name))
            after = cpu_seconds()
            res["cpu_s_per_input"] = {k: (after[k] - before.get(k, 0.0)) / max(res["ok"], 1) for k in after}
            points[key] = res
            print(f"  {name:34s} {key:9s} {res['throughput']:7.2f}/s  p50 {res['p50_ms']:7.1f} ms  cpu/input "
                  + " ".join(f"{k} {v * 1e3:.1f}ms" for k, v in sorted(res["cpu_s_per_input"].items())), flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
    peak_end = matmul_flop_per_s(dtype)
    peak = around(peak_start, peak_end)
    sides = {"served": points["long/c32"]["throughput"], "in_process": in_process["long"]}
    return {"in_process": in_process, "points": points, "served_over_in_process_long_c32":
            points["long/c32"]["throughput"] / in_process["long"],
            "served_over_in_process_short_c32": points["short/c32"]["throughput"] / in_process["short"],
            "roofline_long_c32": {side: roofline(v * tokens_per_input["long"], flop["long"], peak)
                                  for side, v in sides.items()},
            "dtype": dtype}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated setting names")
    parser.add_argument("--baseline", default=None, help="git revision whose serving code runs as 'default@REV'")
    parser.add_argument("--name", default="serve_settings", help="results file name")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        Path(args.out).write_text(json.dumps(one(args.one)))
        return
    names = args.only.split(",") if args.only else list(SETTINGS)
    worktree = None
    if args.baseline:
        worktree = Path(tempfile.mkdtemp(prefix="bench-baseline-")) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)
        base = f"default@{args.baseline}"
        SETTINGS[base] = ({"PYTHONPATH": str(worktree / "platform")}, [])
        names = [base] + names
    runs: dict[str, list[dict]] = {n: [] for n in names}
    loadavg_start = os.getloadavg()
    for r in range(args.rounds):
        for name in names:
            out = Path(tempfile.mkstemp(suffix=".json")[1])
            env = {**os.environ, **SETTINGS[name][0]}
            print(f"round {r + 1}: {name}", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--out", str(out)], env=env)
            if proc.returncode == 0:
                runs[name].append(json.loads(out.read_text()))
            else:
                runs[name].append({"error": f"exit {proc.returncode}"})
            out.unlink(missing_ok=True)
    summary = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "points" in r]
        if not ok:
            summary[name] = {"error": [r.get("error") for r in rs]}
            continue
        summary[name] = {
            **{key: spread([r["points"][key]["throughput"] for r in ok]) for key in POINTS},
            "short/c1_p50_ms": spread([r["points"]["short/c1"]["p50_ms"] for r in ok]),
            "served_over_in_process_long_c32": spread([r["served_over_in_process_long_c32"] for r in ok]),
            "served_over_in_process_short_c32": spread([r["served_over_in_process_short_c32"] for r in ok]),
            **{f"roofline_fraction_long_c32_{side}": spread([r["roofline_long_c32"][side]["fraction_of_roofline"]
                                                             for r in ok])
               for side in ("served", "in_process")},
            "dtype": ok[0]["dtype"],
            "cpu_ms_per_input_long_c32": {k: round(1e3 * sum(r["points"]["long/c32"]["cpu_s_per_input"].get(k, 0)
                                                            for r in ok) / len(ok), 2)
                                          for k in ok[0]["points"]["long/c32"]["cpu_s_per_input"]},
            "cpu_ms_per_input_short_c32": {k: round(1e3 * sum(r["points"]["short/c32"]["cpu_s_per_input"].get(k, 0)
                                                             for r in ok) / len(ok), 2)
                                           for k in ok[0]["points"]["short/c32"]["cpu_s_per_input"]},
            "env": SETTINGS[name][0], "overrides": SETTINGS[name][1],
        }
        print(f"{name:34s} long/c32 {summary[name]['long/c32']['median']:6.2f}/s "
              f"(served/in-process {summary[name]['served_over_in_process_long_c32']['median']:.2f})  "
              f"short/c32 {summary[name]['short/c32']['median']:6.2f}/s "
              f"(x{summary[name]['served_over_in_process_short_c32']['median']:.2f})  "
              f"short/c1 p50 {summary[name]['short/c1_p50_ms']['median']:.0f} ms")
    payload = {"settings": summary, "runs": runs, "points": {k: {"inputs": v[0], "clients": v[1], "requests": v[2]}
                                                             for k, v in POINTS.items()},
               "rounds": args.rounds, "loadavg_at_start": loadavg_start,
               "method": "one fresh local Ray per setting and round, rounds interleaved; in-process ceiling "
                         "measured in the same child before its Ray starts"}
    if worktree is not None:
        payload["baseline"] = args.baseline
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
