"""Fine-tuning quality: the embedded Gemma 3 270M, base vs fine-tuned on data the pipeline generated.

The figures come from the evaluate job, not from code of this file: `make quality` runs the
configs/cpu-quality.yaml pipeline (generate -> decontaminate -> [consistency] -> train -> evaluate base and
fine-tuned on the FULL local sets, same instructions, same max_length) through `ray job submit`, then
this script collects the two evaluation manifests into bench/results/quality.json: per task `base`,
`tuned`, `delta` (tuned - base, in points) and `reference` (all-MiniLM-L6-v2's public score), which data
filters were on, and `targets` (the issue's: STSb multilingual mean over 9 languages >= 57.4, Tatoeba
mean over the 10 local pairs >= 60, English STSb >= 75). `full_sets` says whether every task ran
without a limit.

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
    "banking77_accuracy": "Banking77Classification",
}
TARGETS = {"stsb_multilingual_mean": ("stsb_multilingual_avg", 57.4), "tatoeba10_mean": ("tatoeba_avg", 60.0),
           "stsb_en": ("stsb_en", 75.0)}
REFERENCE_MODEL = "all-MiniLM-L6-v2"
SHARED = REPO.parent / "shared" / "data"


def task_scores(manifest: dict) -> dict[str, dict[str, float]]:
    """{task: {subset: main score}} of one evaluation run (the default classification protocol)."""
    out: dict[str, dict[str, float]] = {}
    for s in manifest["scores"]:
        if s.get("protocol") in (None, "default", "mteb"):
            out.setdefault(s["task"], {})[s["subset"]] = s["score"]
    return out


def _filters(root: Path) -> dict:
    """Which data filters shaped the training data, read from the run's own folders."""
    config = json.loads((root / "summary.json").read_text()) if (root / "summary.json").is_file() else {}
    import yaml

    def stage_config(name: str) -> dict:
        path = root / name / "config.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    language_check = stage_config("generate").get("language_check")
    train_cfg = stage_config("train")
    return {
        "language_check": language_check,
        "language_filter": (root / "language" / "manifest.json").is_file(),
        "decontaminate": (root / "decontaminate" / "manifest.json").is_file(),
        "consistency": (root / "consistency" / "manifest.json").is_file(),
        "false_negative_margin": train_cfg.get("false_negative_margin"),
        "hard_negatives": train_cfg.get("hard_negatives", True),
        "summary_stage_seconds": config.get("stage_seconds"),
    }


def collect(root: Path) -> dict:
    from synthembed.evaluate.report import parse_reference_scores

    base_m = json.loads((root / "evaluate" / "base" / "manifest.json").read_text())
    tuned_m = json.loads((root / "evaluate" / "tuned" / "manifest.json").read_text())
    base, tuned = task_scores(base_m), task_scores(tuned_m)
    refs = parse_reference_scores(SHARED / "REFERENCE_SCORES.md").get(REFERENCE_MODEL, {})
    tasks, details = {}, {}
    for key, task in TASKS.items():
        if task not in base or task not in tuned:
            raise SystemExit(f"{root}: the evaluation has no {task}; run configs/cpu-quality.yaml (make quality)")
        keep = sorted(base[task])
        b = statistics.mean(base[task][s] for s in keep)
        t = statistics.mean(tuned[task][s] for s in keep)
        ref = [refs[(task, s)] for s in keep if (task, s) in refs]
        full_set = all(s["rows"] == s["full_rows"] for s in tuned_m["scores"] if s["task"] == task)
        tasks[key] = {"base": round(b, 2), "tuned": round(t, 2), "delta": round(t - b, 2),
                      "reference": {REFERENCE_MODEL: round(statistics.mean(ref), 2) if len(ref) == len(keep) else None},
                      "subsets": len(keep), "full_set": full_set}
        details[key] = {s: {"base": base[task][s], "tuned": tuned[task][s]} for s in keep}
    rows = {f"{s['task']}/{s['subset']}": f"{s['rows']} of {s['full_rows']}" for s in tuned_m["scores"]}
    train = json.loads((root / "train" / "manifest.json").read_text())
    stats_file = root / "generate" / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    full = all(s["rows"] == s["full_rows"] for s in tuned_m["scores"])
    return {
        "full_sets": full,
        "targets": {name: {"tuned": tasks[key]["tuned"], "target": target, "met": tasks[key]["tuned"] >= target}
                    for name, (key, target) in TARGETS.items()},
        "filters": _filters(root),
        "tasks": tasks,
        "subsets": details,
        "rows_evaluated": rows,
        "evaluation": {"base": str(root / "evaluate" / "base"), "tuned": str(root / "evaluate" / "tuned"),
                       "report": str(root / "evaluate" / "tuned" / "report.md"),
                       "max_length": tuned_m["model"]["max_length"], "seconds": {"base": base_m.get("seconds"), "tuned": tuned_m.get("seconds")}},
        "training": {k: train.get(k) for k in ("steps", "total_steps", "restarts", "examples", "first_loss", "final_loss",
                                               "median_examples_per_s", "wall_seconds", "base_model", "backend", "num_workers")},
        "training_data": {k: stats.get(k) for k in ("examples", "rejects", "by_task_type", "languages") if k in stats},
        # a generation stopped by its time budget: the rows trained on are the part of the plan made so far
        "generation": {k: v for k, v in json.loads((root / "generate" / "manifest.json").read_text()).items()
                       if k in ("partial", "requests_planned", "requests_owed", "examples")},
        "ablation": _ablation(root / "generate"),
    }


def _ablation(generated: Path, path: Path = REPO / "bench" / "results" / "quality_ablation.json") -> dict | None:
    """The ablation (bench/quality_ablation.py's result) when it was run on this run's generated rows."""
    if not path.is_file():
        return None
    from synthembed.stage import input_fingerprint

    ablation = json.loads(path.read_text())
    # the same rows, not just the same folder name: a folder's rows change as it grows or is regenerated
    same = ablation.get("generated_fingerprint") == input_fingerprint(generated)
    keys = ("arms", "arm_settings", "evaluation", "epochs", "overrides")
    return {k: ablation[k] for k in keys if k in ablation} if same else None


def main() -> None:
    from common import write_result

    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "outputs" / "quality").resolve()
    name = sys.argv[2] if len(sys.argv) > 2 else "quality"  # e.g. quality_ablation_<arm>
    payload = collect(root)
    path = write_result(name, payload)
    print(f"{'task':<24}{'base':>8}{'tuned':>8}{'delta':>8}{'MiniLM':>8}")
    for key, r in payload["tasks"].items():
        ref = r["reference"][REFERENCE_MODEL]
        print(f"{key:<24}{r['base']:>8.2f}{r['tuned']:>8.2f}{r['delta']:>+8.2f}{ref if ref is not None else '-':>8}")
    print(f"full sets: {payload['full_sets']}; targets: " + ", ".join(
        f"{k} {v['tuned']} vs {v['target']} ({'met' if v['met'] else 'missed'})" for k, v in payload["targets"].items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
