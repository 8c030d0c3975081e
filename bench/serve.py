"""Serving throughput and latency: Ray Serve app vs in-process encoding vs a peer server, same model.

Bounded closed-loop load on loopback: `c` clients (c = 1, 8, 32) each send one-input requests back to back
until a fixed number of requests is done; short (~16 tokens) and long (~256 tokens) inputs cut from SciFact
abstracts. Reported per point: throughput (inputs/s), p50/p99 latency, HTTP errors.

- served:     `synthembed.serve.deploy` with the `serve:` section of configs/cpu-tiny.yaml (1 replica,
              2 torch threads, 8192 padded tokens per batch), on a local Ray started by this script;
- in-process: `Embedder.encode(texts, batch_size=32)` of the same model in this process (the ceiling);
- peer:       infinity-emb (its own venv, --infinity-python; same weights as a sentence-transformers folder
              with last-token pooling, batch size 32), else sentence-transformers behind a plain FastAPI app.

`ratio` = served / in-process throughput at c=32, long inputs. Run it alone on the machine:

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/serve.py      # takes the Ray lock itself
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gzip
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, spread, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl.gz"
log = logging.getLogger("bench.serve")


# --------------------------------------------------------------------------------------------- inputs
def make_texts(tokenizer, n: int, tokens: int, seed: int) -> list[str]:
    """n texts of about `tokens` tokens (EOS included) cut from SciFact abstracts."""
    rng = random.Random(seed)
    docs = [json.loads(line)["text"] for line in gzip.open(SCIFACT, "rt", encoding="utf-8")]
    docs = [d for d in docs if len(d) > tokens * 8]
    out = []
    for doc in rng.sample(docs, n):
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        out.append(tokenizer.decode(ids[: tokens - 1]))
    return out


# ----------------------------------------------------------------------------------------------- load
async def closed_loop(url: str, texts: list[str], concurrency: int, model: str, headers: dict | None = None) -> dict:
    """`concurrency` workers send the texts one per request; returns throughput and latency stats."""
    import aiohttp

    queue = list(enumerate(texts))
    latencies, errors = [], {}

    async def worker(session):
        while queue:
            _, text = queue.pop()
            start = time.perf_counter()
            try:
                async with session.post(url, json={"input": [text], "model": model}, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[r.status] = errors.get(r.status, 0) + 1
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "requests": len(texts), "ok": len(latencies), "errors": errors, "wall_s": wall,
        "throughput": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3), "mean_ms": float(lat.mean() * 1e3),
    }


def sweep(url: str, sets: dict, plan: dict, model: str, label: str) -> dict:
    out = {}
    for length, texts in sets.items():
        for c, n in plan[length].items():
            res = asyncio.run(closed_loop(url, texts[:n], c, model))
            out[f"{length}/c{c}"] = res
            print(f"  {label:10s} {length:5s} c={c:<3d} {res['throughput']:7.2f}/s  p50 {res['p50_ms']:8.1f} ms  "
                  f"p99 {res['p99_ms']:8.1f} ms  errors {res['errors']}", flush=True)
    return out


def wait_ready(url: str, payload: dict, timeout: float) -> float:
    import requests

    start = time.time()
    while time.time() - start < timeout:
        try:
            if requests.post(url, json=payload, timeout=120).status_code == 200:
                return time.time() - start
        except requests.RequestException:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


# ----------------------------------------------------------------------------------------------- peers
def st_folder(model_dir: Path, out: Path, max_len: int) -> Path:
    """The same weights as a sentence-transformers folder with last-token pooling, readable by older
    transformers (infinity pins transformers 4.x: rope_theta at top level, a generic tokenizer class)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json"):
        target = out / name
        if not target.exists():
            target.symlink_to(model_dir / name)
    cfg = json.loads((model_dir / "config.json").read_text())
    if "rope_parameters" in cfg:
        cfg.setdefault("rope_theta", cfg["rope_parameters"].get("rope_theta", 10000.0))
    (out / "config.json").write_text(json.dumps(cfg))
    tok = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tok))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": cfg["hidden_size"], "pooling_mode_lasttoken": True,
         "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False}))
    return out


ST_APP = '''
import sys, torch
from fastapi import FastAPI
from sentence_transformers import SentenceTransformer
torch.set_num_threads(2)
model = SentenceTransformer(sys.argv[1], device="cpu", model_kwargs={"dtype": getattr(torch, sys.argv[2])})
app = FastAPI()
@app.post("/v1/embeddings")
def embed(body: dict):
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    vecs = model.encode(inputs, batch_size=32, normalize_embeddings=True)
    return {"object": "list", "model": body.get("model"), "data": [
        {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]}
'''


def start_peer(kind: str, folder: Path, infinity_python: str | None, port: int, workdir: Path, dtype: str):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "DO_NOT_TRACK": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    logf = open(workdir / f"{kind}.log", "w")
    if kind == "infinity":
        exe = str(Path(infinity_python).parent / "infinity_emb")
        cmd = [exe, "v2", "--model-id", str(folder), "--served-model-name", "smollm2-135m", "--port", str(port),
               "--engine", "torch", "--device", "cpu", "--batch-size", "32", "--url-prefix", "/v1",
               "--no-bettertransformer", "--no-model-warmup",
               "--dtype", {"float32": "float32", "bfloat16": "bfloat16"}[dtype]]
    else:
        app = workdir / "st_app.py"
        app.write_text(ST_APP)
        cmd = [sys.executable, "-m", "uvicorn", "st_app:app", "--app-dir", str(workdir), "--port", str(port),
               "--log-level", "warning"]
        env["PYTHONPATH"] = str(workdir)
        cmd = [sys.executable, "-c", f"import sys; sys.argv=['x','{folder}','{dtype}']; import uvicorn; "
               f"sys.path.insert(0,'{workdir}'); import st_app; uvicorn.run(st_app.app, host='127.0.0.1', "
               f"port={port}, log_level='warning')"]
    return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------------- chart
def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, length in zip(axes, ("short", "long")):
        for name, style in (("served", "o-"), ("peer", "s--")):
            pts = results.get(name) or {}
            cs = sorted(int(k.split("/c")[1]) for k in pts if k.startswith(length + "/"))
            if cs:
                ax.plot(cs, [pts[f"{length}/c{c}"]["throughput"] for c in cs], style,
                        label=results["labels"][name])
        ip = results["in_process"][length]["median"]
        ax.axhline(ip, color="gray", ls=":", label=f"in-process encode: {ip:.2f}/s")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32], ["1", "8", "32"])
        ax.set_xlabel("concurrent clients (1 input per request)")
        ax.set_ylabel("inputs / s")
        ax.set_title(f"{length} inputs (~{results['setup']['tokens'][length]} tokens)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['setup']['model']} on {results['setup']['cpu']} ({results['setup']['cores']} cores): "
                 f"served/in-process at c=32 long = {results['ratio']:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu-tiny.yaml"))
    parser.add_argument("--peer", choices=["auto", "infinity", "st", "none"], default="auto")
    parser.add_argument("--infinity-python", default=os.environ.get("INFINITY_PYTHON", "/tmp/se6/inf/bin/python"),
                        help="python of a venv with infinity-emb (pip install torch==2.13.0 'infinity-emb[server,torch]')")
    parser.add_argument("--quick", action="store_true", help="fewer requests per point (smoke run)")
    parser.add_argument("--ray-lock-held", action="store_true",
                        help="the caller already holds /tmp/synthembed-ray.lock (flock ... bench/serve.py)")
    parser.add_argument("--note", default=None, help="free text stored in the json (e.g. how the run was locked)")
    parser.add_argument("--repeats", type=int, default=3, help="served/in-process runs of the headline point")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="serve.model.dtype for every side (auto: settled here, by model.precision)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further serve config override for the served and in-process sides alike, "
                             "e.g. serve.model.compile=true")
    parser.add_argument("--name", default=None, help="results file name (default serve, or serve_vllm with --vllm)")
    parser.add_argument("--vllm", action="store_true",
                        help="also serve through the vLLM backend (replicas on .venv-vllm's python), same points")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loadavg_start = os.getloadavg()
    import torch

    torch.set_num_threads(2)
    from synthembed.config import load_config
    from roofline import around, forward_flop_per_token, matmul_flop_per_s, roofline

    from synthembed.model import Embedder
    from synthembed.model.loading import resolve_model_dir
    from synthembed.model.precision import inference_dtype
    from synthembed.serve import ServeConfig
    from synthembed.serve.config import VllmServeConfig

    cfg = load_config(ServeConfig, args.config, [f"serve.model.source={args.model}", "serve.model.max_length=512",
                                                 "serve.app_name=bench", "serve.route_prefix=/bench",
                                                 f"serve.model.dtype={args.dtype}", *args.set], section="serve")
    # every side in the one dtype "auto" means on this machine (the replica runs here too)
    dtype = str(inference_dtype(cfg.model.dtype, torch.device("cpu"))).removeprefix("torch.")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dtype": dtype})})
    peak_start = matmul_flop_per_s(dtype)
    embedder = Embedder.load(cfg.model)
    tokens = {"short": 16, "long": 256}
    if args.quick:
        plan = {"short": {1: 16, 8: 32, 32: 64}, "long": {1: 4, 8: 16, 32: 32}}
    else:
        plan = {"short": {1: 32, 8: 64, 32: 128}, "long": {1: 6, 8: 16, 32: 64}}
    n_max = {k: max(v.values()) for k, v in plan.items()}
    sets = {k: make_texts(embedder.tokenizer, n_max[k], tokens[k], seed=i) for i, k in enumerate(tokens)}
    real = {k: float(np.mean([len(x) for x in embedder.tokenize(v, max_length=512)])) for k, v in sets.items()}
    print(f"model {args.model}; mean tokens/input (EOS incl.): {real}", flush=True)

    # ---- in-process ceiling: same model; batch size 32 (= the served 8192-token budget at 256 tokens) and 8,
    # the faster of the two is the ceiling (on this CPU large padded batches are not always faster per input)
    def in_process(length: str, batch_size: int, n: int | None = None) -> float:
        texts = sets[length][: n or plan[length][32]]
        start = time.perf_counter()
        embedder.encode(texts, batch_size=batch_size)
        return len(texts) / (time.perf_counter() - start)

    embedder.encode(sets["short"][:4])  # warm-up
    by_bs = {k: {bs: in_process(k, bs) for bs in (8, 32)} for k in ("short", "long")}
    best_bs = {k: max(v, key=v.get) for k, v in by_bs.items()}
    in_proc = {k: [by_bs[k][best_bs[k]]] for k in by_bs}
    print(f"  in-process inputs/s by batch size: {by_bs}", flush=True)

    # ---- served: a local Ray (the machine-wide Ray lock: port 8000 is shared with the test cluster)
    lock = open("/tmp/synthembed-ray.lock", "w")
    if not args.ray_lock_held:
        fcntl.flock(lock, fcntl.LOCK_EX)
    import ray
    from ray import serve

    from synthembed.serve import deploy

    results = {"labels": {"served": "Ray Serve (synthembed)"}}
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    headline = {"served": [], "in_process": []}
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=str(workdir / "ray"))
        t0 = time.time()
        url = deploy(cfg) + "/v1/embeddings"
        deploy_s = time.time() - t0
        wait_ready(url, {"input": sets["short"][:4]}, 120)
        results["served"] = sweep(url, sets, plan, cfg.model_name, "served")
        headline["served"].append(results["served"]["long/c32"]["throughput"])
        # Headline pair, interleaved so that load from other work on the machine hits both sides alike.
        n = plan["long"][32]
        for _ in range(args.repeats - 1):
            headline["in_process"].append(in_process("long", best_bs["long"], n))
            r = asyncio.run(closed_loop(url, sets["long"][:n], 32, cfg.model_name))
            headline["served"].append(r["throughput"])
            print(f"  headline pair: in-process {headline['in_process'][-1]:.2f}/s  served c=32 "
                  f"{r['throughput']:.2f}/s", flush=True)
        serve.delete("bench")
        if args.vllm:  # the same app and points, the replica's engine swapped for vLLM's pooling runner
            vcfg = cfg.model_copy(update={"backend": "vllm", "app_name": "bench-vllm", "route_prefix": "/bench-vllm",
                                          "vllm": VllmServeConfig(python=str(REPO / ".venv-vllm" / "bin" / "python"),
                                                                  env={"VLLM_CPU_KVCACHE_SPACE": "1",
                                                                       "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})})
            vurl = deploy(vcfg) + "/v1/embeddings"
            wait_ready(vurl, {"input": sets["short"][:4]}, 600)
            results["served_vllm"] = sweep(vurl, sets, plan, vcfg.model_name, "served (vLLM)")
            results["labels"]["served_vllm"] = "Ray Serve (synthembed, vLLM backend)"
            serve.delete("bench-vllm")
        serve.shutdown()
    finally:
        ray.shutdown()
        fcntl.flock(lock, fcntl.LOCK_UN)
    in_proc["long"] += headline["in_process"]
    in_proc["short"].append(in_process("short", best_bs["short"]))
    print(f"  in-process short again {in_proc['short'][-1]:.2f}/s", flush=True)

    # ---- peer server
    peer_kind = args.peer
    if peer_kind == "auto":
        peer_kind = "infinity" if Path(args.infinity_python).is_file() else "st"
    peer_info = None
    if peer_kind != "none":
        folder = st_folder(resolve_model_dir(args.model), workdir / "st-model", 512)
        port = 7997
        proc = start_peer(peer_kind, folder, args.infinity_python, port, workdir, dtype)
        purl = f"http://127.0.0.1:{port}/v1/embeddings"
        try:
            ready_s = wait_ready(purl, {"input": sets["short"][:4], "model": "smollm2-135m"}, 600)
            results["peer"] = sweep(purl, sets, plan, "smollm2-135m", peer_kind)
            version = None
            if peer_kind == "infinity":
                version = subprocess.run([args.infinity_python, "-c", "import infinity_emb; print(infinity_emb.__version__)"],
                                         capture_output=True, text=True).stdout.strip()
            peer_info = {"kind": peer_kind, "version": version, "ready_s": ready_s,
                         "settings": "batch-size 32, torch engine, cpu, OMP_NUM_THREADS=2, no bettertransformer"
                         if peer_kind == "infinity" else "sentence-transformers encode(batch_size=32) per request"}
            results["labels"]["peer"] = {"infinity": "infinity-emb", "st": "sentence-transformers + FastAPI"}[peer_kind]
        except Exception as err:  # a peer that does not come up is recorded, not fatal
            peer_info = {"kind": peer_kind, "error": f"{type(err).__name__}: {err}",
                         "log_tail": (workdir / f"{peer_kind}.log").read_text()[-2000:]}
            print(f"  peer {peer_kind} failed: {err}", flush=True)
        finally:
            stop(proc)

    peak_end = matmul_flop_per_s(dtype)
    peak = around(peak_start, peak_end)
    lengths = {k: [len(x) for x in embedder.tokenize(v, max_length=512)] for k, v in sets.items()}
    flop = {k: forward_flop_per_token(embedder.model, v) for k, v in lengths.items()}
    results["in_process"] = {k: spread(v) for k, v in in_proc.items()}
    results["in_process_by_batch_size"] = {k: {str(b): t for b, t in v.items()} for k, v in by_bs.items()}
    results["headline_runs"] = headline
    served_long = float(np.median(headline["served"]))
    ratio = served_long / results["in_process"]["long"]["median"]
    # achieved FLOP/s of each side at the headline point (c=32, long inputs), against the matmul roofline
    per_side = {"served": served_long, "in_process": results["in_process"]["long"]["median"]}
    if "peer" in results:
        per_side["peer"] = results["peer"]["long/c32"]["throughput"]
    results["roofline_long_c32"] = {side: roofline(v * real["long"], flop["long"], peak) for side, v in per_side.items()}
    results["matmul"] = peak
    import platform as _platform

    from common import machine

    m = machine()
    results["setup"] = {
        "model": args.model, "dtype": dtype, "cpu": m["cpu"], "cores": m["cores"], "tokens": tokens, "mean_tokens": real,
        "plan_requests": {k: {str(c): n for c, n in v.items()} for k, v in plan.items()},
        "serve_config": cfg.model_dump(mode="json"), "deploy_s": deploy_s, "python": _platform.python_version(),
        "client": "aiohttp closed loop, 1 input per request, loopback",
        "in_process": f"Embedder.encode, best of batch_size 8/32 (long: {best_bs['long']}, short: {best_bs['short']})",
    }
    payload = {"ratio": ratio, "ratio_definition": "median served throughput (inputs/s, c=32, long inputs) / "
               "median in-process throughput (best batch size), runs interleaved",
               "target": 0.9, "peer_server": peer_info, **results, "loadavg_at_start": loadavg_start,
               "quick": args.quick, "note": args.note, "overrides": args.set}
    if peer_info and "peer" in results:
        payload["peer_ratio_long_c32"] = served_long / results["peer"]["long/c32"]["throughput"]
    if "served_vllm" in results:
        payload["vllm_vs_torch"] = {k: results["served_vllm"][k]["throughput"] / results["served"][k]["throughput"]
                                    for k in results["served"]}
        payload["vllm_version"] = subprocess.run(
            [str(REPO / ".venv-vllm" / "bin" / "python"), "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True, text=True).stdout.strip()

    name = args.name or ("serve_vllm" if args.vllm else "serve")  # the vLLM comparison keeps its own record
    path = write_result(name, payload)
    chart(payload, RESULTS / f"{name}.png")
    print("roofline fraction at c=32, long: " + ", ".join(
        f"{k} {v['fraction_of_roofline']:.2f}" for k, v in results["roofline_long_c32"].items()) + f" ({dtype})")
    print(f"\nratio served/in-process (c=32, long) = {ratio:.3f}  -> {path}, {RESULTS / (name + '.png')}")
    print(f"{'system':12s} {'len':5s} {'c':>3s} {'inputs/s':>9s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for name in ("served", "served_vllm", "peer"):
        for key, r in (results.get(name) or {}).items():
            length, c = key.split("/c")
            print(f"{name:12s} {length:5s} {c:>3s} {r['throughput']:9.2f} {r['p50_ms']:9.1f} {r['p99_ms']:9.1f}")
    for k, v in results["in_process"].items():
        print(f"{'in-process':12s} {k:5s} {'-':>3s} {v['median']:9.2f}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
