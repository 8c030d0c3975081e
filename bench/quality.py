"""Fine-tuning quality: the embedded Gemma 3 270M, base vs fine-tuned on data the pipeline generated.

The figures come from the evaluate job, not from code of this file: `make quality` runs the cpu-tiny
pipeline (generate -> train -> evaluate base and fine-tuned, same tasks, same instructions, same
max_length) through `ray job submit`, then this script collects the two evaluation manifests into
bench/results/quality.json: per task `base`, `tuned` and `delta` (tuned - base, in points).

    make quality                                    # the run and this script
    .venv/bin/python bench/quality.py outputs/quality   # only re-collect a finished run
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

# quality.json key -> mteb task name; a task's figure is the mean over every subset the run evaluated
TASKS = {
    "stsb_en": "STSBenchmark",
    "stsb_multilingual_avg": "STSBenchmarkMultilingualSTS",
    "scifact_ndcg@10": "SciFact",
    "tatoeba_avg": "Tatoeba",
}


def task_scores(manifest: dict) -> dict[str, dict[str, float]]:
    """{task: {subset: main score}} of one evaluation run (the default classification protocol)."""
    out: dict[str, dict[str, float]] = {}
    for s in manifest["scores"]:
        if s.get("protocol") in (None, "default", "mteb"):
            out.setdefault(s["task"], {})[s["subset"]] = s["score"]
    return out


def collect(root: Path) -> dict:
    base_m = json.loads((root / "evaluate" / "base" / "manifest.json").read_text())
    tuned_m = json.loads((root / "evaluate" / "tuned" / "manifest.json").read_text())
    base, tuned = task_scores(base_m), task_scores(tuned_m)
    tasks, details = {}, {}
    for key, task in TASKS.items():
        if task not in base or task not in tuned:
            raise SystemExit(f"{root}: the evaluation has no {task}; run the cpu-tiny evaluate task list (make quality)")
        keep = sorted(base[task])
        b = statistics.mean(base[task][s] for s in keep)
        t = statistics.mean(tuned[task][s] for s in keep)
        tasks[key] = {"base": round(b, 2), "tuned": round(t, 2), "delta": round(t - b, 2)}
        details[key] = {s: {"base": base[task][s], "tuned": tuned[task][s]} for s in keep}
    rows = {f"{s['task']}/{s['subset']}": f"{s['rows']} of {s['full_rows']}" for s in tuned_m["scores"]}
    train = json.loads((root / "train" / "manifest.json").read_text())
    stats_file = root / "generate" / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    return {
        "tasks": tasks,
        "subsets": details,
        "rows_evaluated": rows,
        "evaluation": {"base": str(root / "evaluate" / "base"), "tuned": str(root / "evaluate" / "tuned"),
                       "report": str(root / "evaluate" / "tuned" / "report.md"),
                       "max_length": tuned_m["model"]["max_length"], "seconds": {"base": base_m.get("seconds"), "tuned": tuned_m.get("seconds")}},
        "training": {k: train.get(k) for k in ("steps", "total_steps", "restarts", "examples", "first_loss", "final_loss",
                                               "median_examples_per_s", "wall_seconds", "base_model", "backend", "num_workers")},
        "training_data": {k: stats.get(k) for k in ("examples", "rejects", "by_task_type", "languages") if k in stats},
    }


def main() -> None:
    from common import write_result

    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "outputs" / "quality").resolve()
    payload = collect(root)
    path = write_result("quality", payload)
    print(f"{'task':<24}{'base':>8}{'tuned':>8}{'delta':>8}")
    for key, r in payload["tasks"].items():
        print(f"{key:<24}{r['base']:>8.2f}{r['tuned']:>8.2f}{r['delta']:>+8.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
