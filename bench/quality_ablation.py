"""What each data filter is worth: the quality recipe's training, on the same generated rows, one filter added at a time.

Arms (each adds one thing to the one before; decontamination is on in every arm, so no arm trains on
evaluation text):

    none         every generated row (generate.language_check: flag keeps the mismatched ones on disk)
    language     + the language pass (drops rows flagged as written in another language than asked)
    consistency  + the consistency pass (consistency.model scores q/p/n; drops rows with margin < 0)
    fn_mask      + train.false_negative_margin 0.1 (in-batch negatives above the positive - 0.1 are masked)

and, beside the chain, the profile's setting of `train.hard_negatives` flipped on the `language` arm:

    hard_negatives     language + train.hard_negatives true (each row's generated hard negative as a document)
    no_hard_negatives  language + train.hard_negatives false (in-batch negatives only)

and one more beside the chain:

    same_task          language + train.same_task_batches true (each batch drawn from one task type)

One of the two is the profile's own setting, so it trains what `language` trains: that arm is not run, and
the payload gives it `language`'s results with `same_as: language`.

Each arm is the configs/cpu-quality.yaml pipeline through `ray job submit` (stages train, evaluate), with
`<arm>/generate` a link to the one finished generation, evaluated on cpu-tiny's subsets of the three tasks
the quality targets are set on (ablation differences, not headline scores; the headline is `make quality`
on the full sets).
The base model's scores are the same for every arm (its embeddings are cached after the first).

    .venv/bin/python bench/quality_ablation.py [outputs/quality/generate] [--arms a,b] [--seeds 0,1] [--epochs N]
        [--set train.compile=false ...]   # applied to every arm, recorded in the payload

Writes bench/results/quality_ablation.json (or `--result NAME`): per arm the training rows, steps, final loss and per-task
tuned scores, per seed and over seeds (mean, min, max), with the mean's delta over `none`. At ~130 rows
and ~24 steps one seed's score moves by tens of points: compare arms over seeds, never one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

ARMS = {
    "none": {"language_filter": False},
    "language": {"language_filter": True},
    "consistency": {"language_filter": True, "consistency": {"enabled": True}},
    "fn_mask": {"language_filter": True, "consistency": {"enabled": True}, "train": {"false_negative_margin": 0.1}},
    "hard_negatives": {"language_filter": True, "train": {"hard_negatives": True}},
    "no_hard_negatives": {"language_filter": True, "train": {"hard_negatives": False}},
    "same_task": {"language_filter": True, "train": {"same_task_batches": True}},
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def same_as(arms: list[str], profile: dict) -> dict[str, str]:
    """Arm -> an earlier arm in `arms` that trains exactly the same under `profile` (cpu-quality.yaml): with the
    profile's hard_negatives false, `no_hard_negatives` is `language` again, ~20 min of training for nothing."""
    seen: dict[str, str] = {}
    dup = {}
    for arm in arms:
        key = json.dumps(merge(profile, ARMS[arm]), sort_keys=True)
        if key in seen:
            dup[arm] = seen[key]
        else:
            seen[key] = arm
    return dup


def arm_root(out: Path, arm: str, seed: int) -> Path:
    """Seed 0 is the arm's own folder (as before seeds existed); another seed trains in `<arm>-seed<N>`."""
    return out / (arm if seed == 0 else f"{arm}-seed{seed}")


def arm_profile(arm: str, root: Path, generated: Path, epochs: int | None, seed: int = 0,
                sets: list[str] | None = None) -> Path:
    quality = yaml.safe_load((REPO / "configs" / "cpu-quality.yaml").read_text())
    # cpu-tiny's subsets of the tasks the quality targets are set on (STSb, STSb-multi, Tatoeba): the arms
    # differ in training data only, and these three move with it; SciFact and Banking77 are in quality.json
    subsets = [t for t in yaml.safe_load((REPO / "configs" / "cpu-tiny.yaml").read_text())["evaluate"]["tasks"]
               if Path(t["path"]).name in ("stsbenchmark", "stsb_multi_mt", "tatoeba")]
    over = merge(ARMS[arm], {"output_root": str(root), "stages": ["train", "evaluate"],
                             "evaluate": {"tasks": subsets, "classification_protocols": ["mteb"]}})
    if epochs:
        over = merge(over, {"train": {"epochs": epochs}})
    if seed:  # the training data order and LoRA init; the rows and the filters stay the arm's
        over = merge(over, {"train": {"seed": seed}})
    profile = merge(quality, over)
    if sets:
        from synthembed.config import apply_overrides

        profile = apply_overrides(profile, sets)
    root.mkdir(parents=True, exist_ok=True)
    link = root / "generate"
    if not link.exists():
        link.symlink_to(generated.resolve(), target_is_directory=True)
    path = root / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def arm_result(root: Path) -> dict:
    from quality import task_scores

    tuned = task_scores(json.loads((root / "evaluate" / "tuned" / "manifest.json").read_text()))
    base = task_scores(json.loads((root / "evaluate" / "base" / "manifest.json").read_text()))
    train = json.loads((root / "train" / "manifest.json").read_text())
    passes = {}
    for name in ("language", "decontaminate", "consistency"):
        report = root / name / "report.json"
        if report.is_file():
            r = json.loads(report.read_text())
            passes[name] = {"in": r["examples_in"], "kept": r["examples_kept"]}
    return {"passes": passes, "train_rows": train.get("examples"), "steps": train.get("steps"),
            "first_loss": train.get("first_loss"), "final_loss": train.get("final_loss"),
            "tuned": {t: round(statistics.mean(v.values()), 2) for t, v in tuned.items()},
            "base": {t: round(statistics.mean(v.values()), 2) for t, v in base.items()}}


TRAINED_ON = "generated_fingerprint"


def mark_trained_on(root: Path, rows: str) -> None:
    """Record which rows (the generation's fingerprint) and overrides (--epochs, --set) a finished arm trained
    with: the folder grows, and arms of one payload must share their training length."""
    from synthembed.stage import write_text

    write_text(root / TRAINED_ON, rows + "\n")


def arm_marker(generated_fingerprint: str, settings: str) -> str:
    """The key an arm's marker holds and `collect_arms` matches: the rows it read and the training overrides."""
    return f"{generated_fingerprint} {settings}"


def collect_arms(out: Path, generated: Path, rows: str) -> dict:
    """Every finished arm and seed trained on `rows` (`generated`'s fingerprint now), also those of an earlier
    invocation (--arms runs a few at a time); an arm trained on an earlier state of the folder is left out,
    with a line saying so."""
    results = {}
    for arm in ARMS:
        runs = {}
        for seed in range(100):
            root = arm_root(out, arm, seed)
            if not (root / "evaluate" / "tuned" / "manifest.json").is_file():
                continue
            mark = root / TRAINED_ON
            if not mark.is_file() or mark.read_text().strip() != rows:
                print(f"left out {root}: trained on other rows than {generated} holds now, or with other "
                      f"--epochs/--set; rerun it with --arms {arm}")
                continue
            runs[seed] = arm_result(root)
        if runs:
            results[arm] = {**runs[min(runs)], "seeds": runs, "tuned_over_seeds": over_seeds(runs)}
    return results


def over_seeds(runs: dict[int, dict]) -> dict:
    """Per task: mean, min, max and the seeds' scores of one arm's fine-tuned model."""
    tasks = set.intersection(*(set(r["tuned"]) for r in runs.values()))
    return {t: {"mean": round(statistics.mean(r["tuned"][t] for r in runs.values()), 2),
                "min": min(r["tuned"][t] for r in runs.values()), "max": max(r["tuned"][t] for r in runs.values()),
                "by_seed": {seed: r["tuned"][t] for seed, r in runs.items()}} for t in sorted(tasks)}


def main() -> None:
    from common import write_result

    ap = argparse.ArgumentParser()
    ap.add_argument("generated", nargs="?", default=str(REPO / "outputs" / "quality" / "generate"))
    ap.add_argument("--out", default=str(REPO / "outputs" / "quality-ablation"))
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: the profile's)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a profile override for every arm (train.compile=false: a 1-epoch arm of ~60 steps "
                    "runs faster eager than it compiles)")
    ap.add_argument("--result", default="quality_ablation", help="bench/results/<name>.json to write: the payload "
                    "holds only the arms trained on the rows the folder holds now, so a few arms on new rows would "
                    "replace a committed chain")
    ap.add_argument("--seeds", default="0", help="train.seed values per arm, e.g. 0,1,2: the spread of one "
                    "arm over seeds is the noise any difference between arms has to beat")
    args = ap.parse_args()
    from synthembed.stage import input_fingerprint

    seeds = [int(x) for x in args.seeds.split(",")]
    settings = json.dumps({"epochs": args.epochs, "sets": args.sets}, sort_keys=True)
    out = Path(args.out).resolve()
    generated = Path(args.generated).resolve()
    if not (generated / "manifest.json").is_file():
        raise SystemExit(f"{generated}: no finished generation; run `make quality-generate` and let it finish")
    arms = [a for a in args.arms.split(",") if a]  # --arms "": only collect the finished ones
    duplicates = same_as(list(ARMS), yaml.safe_load((REPO / "configs" / "cpu-quality.yaml").read_text()))
    for arm in [a for a in arms if a in duplicates]:
        print(f"arm {arm} trains exactly what arm {duplicates[arm]} trains with configs/cpu-quality.yaml: not run; "
              f"its results are {duplicates[arm]}'s", flush=True)
    arms = [a for a in arms if a not in duplicates]
    if arms:
        subprocess.run([str(REPO / "scripts" / "cluster.sh"), "start"], check=True, cwd=REPO)
    for arm in arms:
        for seed in seeds:
            profile = arm_profile(arm, arm_root(out, arm, seed), generated, args.epochs, seed, args.sets)
            trained_on = arm_marker(input_fingerprint(generated), settings)  # the rows this arm reads now
            print(f"== arm {arm}, seed {seed}: {profile}", flush=True)
            subprocess.run([str(REPO / "scripts" / "cluster.sh"), "submit", "--submission-id",
                            f"ablation-{arm}-{seed}-{os.getpid()}", "--", "python", "jobs/pipeline.py", "--config",
                            str(profile)], check=True, cwd=REPO)
            mark_trained_on(arm_root(out, arm, seed), trained_on)
    rows_now = input_fingerprint(generated)  # the filter below and the payload name the same rows
    results = collect_arms(out, generated, arm_marker(rows_now, settings))
    for arm, twin in duplicates.items():
        if twin in results:
            results[arm] = {**results[twin], "same_as": twin}
    ref = results.get("none", {}).get("tuned_over_seeds", {})
    for r in results.values():
        r["delta_vs_none"] = {t: round(v["mean"] - ref[t]["mean"], 2) for t, v in r["tuned_over_seeds"].items()
                              if t in ref}
    payload = {"generated": str(generated), "generated_fingerprint": rows_now, "arms": results,
               "arm_settings": {a: ARMS[a] for a in results},
               "evaluation": "cpu-tiny's subsets (configs/cpu-tiny.yaml evaluate.tasks) of STSb, STSb-multi, Tatoeba",
               "delta_definition": "mean over the arm's seeds minus the mean over none's seeds",
               "epochs": args.epochs, "overrides": args.sets}
    print(json.dumps({a: r["tuned_over_seeds"] for a, r in results.items()}, indent=1))
    print(f"wrote {write_result(args.result, payload)}")


if __name__ == "__main__":
    main()
