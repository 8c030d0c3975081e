"""Does bf16 cost quality? The evaluate stage on one model in float32 and in bfloat16, same tasks.

The tasks are the pipeline's (configs/cpu-tiny.yaml `evaluate.tasks`: the local subsets); the model is a
fine-tuned `merged/` folder (a base model's last-token vectors score near zero, which would hide a
difference). Each side runs the evaluate job's own code in this process (no Ray actors: both sides
encode the same way), with its own embedding-cache fingerprint (the dtype is part of it). Writes per task
the fp32 and bf16 main scores and their difference in points; the issue's bound is 0.5.

    flock /tmp/synthembed-bench.lock .venv/bin/python bench/precision_eval.py outputs/pipeline/train/merged
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import write_result  # noqa: E402
from quality import task_scores  # noqa: E402

from synthembed.config import load_config  # noqa: E402
from synthembed.evaluate import EvaluateConfig, run  # noqa: E402

BOUND = 0.5


def main() -> None:
    model = str(Path(sys.argv[1]).resolve())
    out, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="precision-eval-") as tmp:
        for dtype in ("float32", "bfloat16"):
            cfg = load_config(EvaluateConfig, ROOT / "configs" / "cpu-tiny.yaml", [
                # kind decoder: a merged folder also loads as sentence-transformers (no instructions, no dtype)
                f"evaluate.model.source={model}", f"evaluate.model.dtype={dtype}", "evaluate.model.kind=decoder",
                "evaluate.ray.enabled=false",
                f"evaluate.output_dir={tmp}/{dtype}", "evaluate.classification_protocols=[mteb]",
                f"evaluate.cache_path={tmp}/cache.sqlite"], section="evaluate")
            t0 = time.time()
            folder = run(cfg)
            seconds[dtype] = round(time.time() - t0, 1)
            out[dtype] = task_scores(json.loads((Path(folder) / "manifest.json").read_text()))
    tasks = {}
    for task, subsets in out["float32"].items():
        a = statistics.mean(subsets.values())
        b = statistics.mean(out["bfloat16"][task][s] for s in subsets)
        tasks[task] = {"float32": round(a, 2), "bfloat16": round(b, 2), "delta": round(b - a, 2),
                       "subsets": {s: {"float32": v, "bfloat16": out["bfloat16"][task][s]} for s, v in subsets.items()}}
        print(f"{task:<32} fp32 {a:7.2f}  bf16 {b:7.2f}  delta {b - a:+.2f}")
    worst = max(abs(t["delta"]) for t in tasks.values())
    print(f"largest |delta| {worst:.2f} points (bound {BOUND}); seconds {seconds}")
    path = write_result("precision_eval", {
        "model": model, "tasks": tasks, "max_abs_delta": worst, "bound": BOUND, "within_bound": worst <= BOUND,
        "seconds": seconds, "bf16_vs_fp32_eval_speed": seconds["float32"] / seconds["bfloat16"],
        "setup": "configs/cpu-tiny.yaml evaluate.tasks (the pipeline's subsets), mteb protocol, in-process, "
                 "fresh cache per run", "command": "python bench/precision_eval.py " + " ".join(sys.argv[1:])})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
