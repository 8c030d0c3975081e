"""SciFact corpus encoding throughput: mteb's plain single-process path vs Ray Data with 1 and 2 workers.

    flock /tmp/synthembed-bench.lock flock /tmp/synthembed-ray.lock .venv/bin/python bench/eval_encode.py \
        [--model gemma3-270m] [--docs 384] [--max-length 128] [--repeats 2]

Sides (same texts, same model, no embedding cache):
- plain: `SynthEmbedEncoder.encode` called the way mteb's retrieval search calls it (a DataLoader of the
  corpus, prompt_type=document), in this process with torch's 2 threads;
- ray-1: Ray Data, one actor with 2 CPUs (2 torch threads);
- ray-2: Ray Data, two actors with 1 CPU each.
Times include what each path really costs: Ray's actor start and model loads in the workers (the plain
path's model load is reported separately). Writes bench/results/eval_encode.json; ratio = plain / ray-2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--docs", type=int, default=384, help="first N SciFact documents (5183 in all)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import mteb
    import numpy as np
    import ray
    from mteb.types import PromptType

    from synthembed.evaluate.config import EvalModelConfig
    from synthembed.evaluate.encoders import LoadedEncoder, make_spec
    from synthembed.evaluate.local_tasks import load_folder
    from synthembed.evaluate.ray_encode import ray_encode
    from synthembed.evaluate.wrapper import SynthEmbedEncoder

    corpus = load_folder(args.data, "beir").subsets["default"]["test"]["corpus"]
    # mteb's corpus text: title + " " + text (mteb._create_dataloaders._corpus_to_dict)
    texts = [(t + " " + x).strip() if t else x.strip() for t, x in zip(corpus["title"], corpus["text"])][: args.docs]
    spec = make_spec(EvalModelConfig(source=args.model, max_length=args.max_length, batch_size=args.batch_size))
    meta = mteb.get_task("SciFact").metadata
    loader = [{"text": texts[i : i + 32]} for i in range(0, len(texts), 32)]

    t0 = time.perf_counter()
    loaded = LoadedEncoder(spec)
    load_s = time.perf_counter() - t0
    plain = SynthEmbedEncoder(spec, name="bench", encoder=loaded)  # no cache, no Ray
    runs: dict[str, list[float]] = {"plain": [], "ray-1": [], "ray-2": []}
    reference = None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for rep in range(args.repeats):
            t = time.perf_counter()
            emb = plain.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default",
                               prompt_type=PromptType.document)
            runs["plain"].append(time.perf_counter() - t)
            reference = emb
            for name, workers, cpus in (("ray-1", 1, 2.0), ("ray-2", 2, 1.0)):
                t = time.perf_counter()
                out = ray_encode(spec, texts, None, num_workers=workers, batch_size=args.batch_size * 2,
                                 cpus_per_worker=cpus)
                runs[name].append(time.perf_counter() - t)
                out = out / np.linalg.norm(out, axis=1, keepdims=True)
                assert np.allclose(out, reference, atol=1e-3), f"{name} embeddings differ from the plain path"
            print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in runs.items()), flush=True)
    finally:
        ray.shutdown()

    def stats(values):
        return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs_s": values,
                "docs_per_s": len(texts) / statistics.median(values)}

    figures = {k: stats(v) for k, v in runs.items()}
    ratio = figures["plain"]["median_s"] / figures["ray-2"]["median_s"]
    print(f"\n{'path':<8}{'median s':>10}{'docs/s':>10}   ({len(texts)} SciFact docs, {args.model}, max_length {args.max_length})")
    for k, v in figures.items():
        print(f"{k:<8}{v['median_s']:>10.1f}{v['docs_per_s']:>10.2f}")
    print(f"plain model load {load_s:.1f}s (not in the plain figures); ratio plain/ray-2 = {ratio:.2f}")
    result = {
        "benchmark": "eval_encode",
        "what": "SciFact corpus encoding (documents, no instruction), wall seconds per full pass",
        "model": args.model, "docs": len(texts), "max_length": args.max_length, "batch_size": args.batch_size,
        "repeats": args.repeats, "figures": figures, "plain_model_load_s": load_s,
        "ratio": ratio, "ratio_definition": "plain median seconds / ray-2 median seconds (>1: Ray faster)",
        "ray_times_include": "actor start + model load in each worker + encoding",
        "machine": machine(), "commit": commit(), "loadavg": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "bench" / "results" / "eval_encode.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
