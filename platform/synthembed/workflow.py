"""generate -> train -> evaluate -> deploy, as one resumable job.

Each stage writes into `<output_root>/<stage>` under the run-folder contract (synthembed.stage): it is
complete when its manifest's fingerprint matches its config and inputs now, so a resubmitted pipeline
skips complete stages, lets an incomplete one resume on its own terms (generation keeps its finished
Parquet parts, training restarts from its latest Ray Train checkpoint), and re-runs every stage downstream
of one whose output changed. The stages are wired by path here and nowhere else: the generated examples
feed training, the merged model feeds evaluation (beside the base model, for the comparison table) and
serving.

Between generate and train, when `language_filter: true`, the language pass (`synth.language_filter`)
first drops the rows the generator's language check flagged as written in another language than asked
(`generate.language_check: flag` keeps them on disk, so the same data trains with or without the filter).
Then, when `decontaminate.enabled` (the default) and training is requested, the
decontamination pass (`synth.decontaminate_stage`) copies the generated examples into
`<output_root>/decontaminate` without the rows that overlap a text of the configured evaluation tasks, and
training reads that folder instead of the generate folder. Its count and examples appear in the summary
and in the fine-tuned model's evaluation report. When `consistency.enabled`, the consistency pass
(`synth.consistency`) then reads that folder and writes `<output_root>/consistency` without the rows
whose hard negative an embedder does not score below the positive by the margin; training reads the
last pass's folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
from pydantic import Field, model_validator

from synthembed.config import StrictModel
from synthembed.embed import EmbedConfig
from synthembed.evaluate.config import EvaluateConfig
from synthembed.packaged import is_named_model
from synthembed.serve.config import ServeConfig
from synthembed.stage import write_json
from synthembed.synth.config import GenerateConfig
from synthembed.synth.consistency import ConsistencyConfig
from synthembed.synth.decontaminate import DecontaminateConfig
from synthembed.synth.language_filter import LanguageFilterConfig
from synthembed.synth.stats import GenerateStats
from synthembed.train.config import DataSource, TrainConfig
from synthembed.train.data import mixed_size, source_files
from synthembed.train.schedule import TrainPlan, plan_training

log = logging.getLogger(__name__)

STAGES = ("generate", "train", "evaluate", "deploy")


class PipelineConfig(StrictModel):
    """A whole cluster profile (configs/*.yaml): one section per stage plus where the run lives."""

    output_root: str = Field("outputs/pipeline", description="every stage writes under <output_root>/<stage>")
    stages: list[Literal["generate", "train", "evaluate", "deploy"]] = Field(default_factory=lambda: list(STAGES))
    embed: EmbedConfig | None = Field(None, description="used by jobs/embed.py only")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    language_filter: LanguageFilterConfig = Field(
        default_factory=LanguageFilterConfig,
        description="drop rows the generator flagged as written in another language (generate.language_check: flag)")
    decontaminate: DecontaminateConfig = Field(
        default_factory=DecontaminateConfig,
        description="remove generated rows overlapping the evaluate.tasks texts before training; `false` turns it off")
    consistency: ConsistencyConfig = Field(
        default_factory=ConsistencyConfig,
        description="after decontamination: drop rows whose hard negative an embedder scores above the positive")
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _language_filter_needs_verdicts(self):
        if self.language_filter.enabled and self.generate.language_check == "off":
            raise ValueError("language_filter: true reads the verdicts of the generator's language check, but "
                             "generate.language_check is off: set generate.language_check: flag")
        return self


def labeled_sources(config: PipelineConfig) -> list[DataSource]:
    """train.data minus the entry that names the generate section's own output (a stage job's link)."""
    generated = {Path(config.generate.output_dir).expanduser().resolve(), training_input(config)}
    return [d for d in config.train.data if Path(d.path).expanduser().resolve() not in generated]


def data_passes(config: PipelineConfig) -> list[str]:
    """The enabled filter passes between generate and train, in order; each reads the previous one's folder."""
    return [name for name, on in (("language", config.language_filter.enabled),
                                  ("decontaminate", config.decontaminate.enabled),
                                  ("consistency", config.consistency.enabled)) if on]


def training_input(config: PipelineConfig) -> Path:
    """The folder training reads the generated examples from: the last filter pass's, or the generate folder."""
    root = Path(config.output_root).expanduser().resolve()
    return root / ([*["generate"], *data_passes(config)][-1])


def wire(config: PipelineConfig) -> PipelineConfig:
    """Point each stage at the previous stage's output; the per-stage paths in the file are ignored."""
    root = Path(config.output_root).expanduser().resolve()
    generate = config.generate.model_copy(update={"output_dir": str(root / "generate")})
    generated = DataSource(path=str(training_input(config)))
    train = config.train.model_copy(
        update={"data": [generated, *labeled_sources(config)], "storage_path": str(root), "name": "train",
                "output_dir": None}
    )
    merged = str(root / "train" / "merged")
    serve_model = config.serve.model.model_copy(update={"source": merged, "adapter": None})
    return config.model_copy(
        update={
            "generate": generate,
            "train": train,
            "serve": config.serve.model_copy(update={"model": serve_model}),
        }
    )


def evaluation_configs(config: PipelineConfig) -> tuple[EvaluateConfig, EvaluateConfig]:
    """The base model and the fine-tuned one, on the same tasks, the second compared to the first."""
    root = Path(config.output_root).expanduser().resolve()
    base_model = config.evaluate.model.model_copy(
        update={"source": config.train.model.source, "adapter": None, "name": "base"}
    )
    tuned_model = config.evaluate.model.model_copy(
        # kind=decoder: merged/ also carries sentence-transformers modules, but both runs must go through
        # the same Embedder path (same max_length, same classification protocols) to be comparable.
        update={"source": str(root / "train" / "merged"), "adapter": None, "name": "fine-tuned", "kind": "decoder"}
    )
    base = config.evaluate.model_copy(update={"model": base_model, "output_dir": str(root / "evaluate" / "base")})
    report = str(root / "decontaminate" / "report.json") if config.decontaminate.enabled else None
    tuned = config.evaluate.model_copy(
        update={"model": tuned_model, "output_dir": str(root / "evaluate" / "tuned"), "compare_with": [base.output_dir],
                "decontamination_report": report}
    )
    return base, tuned


def preflight(config: PipelineConfig) -> list[str]:
    """Problems that would make a stage fail later, found before any compute; [] when there are none."""
    problems = []
    labeled = labeled_sources(config)
    for i, source in enumerate(config.train.data):
        if source in labeled and not Path(source.path).expanduser().exists():
            problems.append(f"train.data[{i}].path: {source.path} does not exist")
    for i, task in enumerate(config.evaluate.tasks):
        if task.path and not Path(task.path).expanduser().is_dir():
            problems.append(f"evaluate.tasks[{i}].path: {task.path} is not a folder")
    src = config.train.model.source
    looks_like_path = src.startswith((".", "/", "~")) or src.endswith(".gguf")
    if not is_named_model(src) and looks_like_path and not Path(src).expanduser().exists():
        problems.append(f"train.model.source: {src} does not exist")
    if config.stages != [s for s in STAGES if s in config.stages]:
        problems.append(f"stages must keep the order {list(STAGES)}, got {config.stages}")
    if "train" in config.stages and not problems and not config.train.allow_unusual_schedule:
        problems += [f"{p} (or set train.allow_unusual_schedule: true)" for p in train_plan(config).problems]
    return problems


def train_plan(config: PipelineConfig) -> TrainPlan:
    """The training plan before anything ran, on the wired data: the generated rows counted from a finished
    generate folder, else estimated by generate.num_examples (an upper bound: rejects lower it); labeled
    sources counted from their Parquet metadata."""
    wired = wire(config)
    generated = training_input(config)
    done = (generated / "manifest.json").is_file() and "generate" not in config.stages
    n, estimated = 0, False
    for source in wired.train.data:
        if Path(source.path) == generated and not done:
            rows, estimated = config.generate.num_examples, True
        else:
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in source_files(source))
        n += mixed_size(rows, source.ratio)
    origin = "estimated: generated rows counted as generate.num_examples" if estimated else "counted in train.data"
    return plan_training(config.train, n, origin)



def run(config: PipelineConfig) -> dict:
    """Run (or resume) the stages in `config.stages`; return the summary that is also printed."""
    problems = preflight(config)
    if problems:
        raise ValueError("pipeline config:\n  " + "\n  ".join(problems))
    config = wire(config)
    root = Path(config.output_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float | str] = {}
    summary: dict = {"output_root": str(root)}

    def stage(name: str, complete, fn) -> None:
        """Run `fn` unless every folder of the stage is complete (each stage also checks itself)."""
        if name not in config.stages:
            timings[name] = "not requested"
            return
        if complete():
            log.info("stage %s: complete for its current inputs and settings, skipping", name)
            timings[name] = "skipped (complete)"
            return
        log.info("stage %s: starting", name)
        t0 = time.time()
        fn()
        timings[name] = round(time.time() - t0, 1)

    # Deferred: the stages import mteb and Ray; `--check` needs neither.
    from synthembed import evaluate, synth, train
    from synthembed.evaluate.run import stage_folder as eval_folder
    from synthembed.synth.pipeline import stage_folder as generate_folder
    from synthembed.train.run import stage_folder as train_folder

    stage("generate", lambda: generate_folder(config.generate).complete(), lambda: synth.run(config.generate))
    if "train" in config.stages:
        _data_passes(config, root, timings)
    # Fingerprints are computed when a stage is reached: they read the manifests the stage before wrote.
    stage("train", lambda: train_folder(config.train).complete(), lambda: train.run(config.train))
    base_eval, tuned_eval = evaluation_configs(config)
    stage("evaluate",
          lambda: (root / "train" / "merged").is_dir() and all(eval_folder(c).complete() for c in (base_eval, tuned_eval)),
          lambda: [evaluate.run(c) for c in (base_eval, tuned_eval)])

    def _deploy() -> None:
        from synthembed.serve import deploy

        summary["endpoint"] = deploy(config.serve)

    stage("deploy", lambda: False, _deploy)
    summary["stage_seconds"] = timings
    summary.update(collect_summary(root, config))
    write_json(root / "summary.json", summary)
    return summary


def _data_passes(config: PipelineConfig, root: Path, timings: dict) -> None:
    """The filter passes between generate and train (see the module docstring); each skipped when complete."""
    from synthembed.synth import consistency, decontaminate_stage, language_filter

    source = root / "generate"
    for name in data_passes(config):
        if name == "language":
            args = (source, root / name, config.language_filter)
            folder, run_pass = language_filter.stage_folder(*args), language_filter.run
        elif name == "decontaminate":
            args = (source, root / name, config.evaluate.tasks, config.decontaminate)
            folder, run_pass = decontaminate_stage.stage_folder(*args), decontaminate_stage.run
        else:
            args = (source, root / name, config.consistency, config.train.model)
            folder, run_pass = consistency.stage_folder(*args), consistency.run
        if folder.complete():
            log.info("stage %s: complete for its current inputs and settings, skipping", name)
            timings[name] = "skipped (complete)"
        else:
            log.info("stage %s: starting", name)
            t0 = time.time()
            run_pass(*args)
            timings[name] = round(time.time() - t0, 1)
        source = root / name


def collect_summary(root: Path, config: PipelineConfig) -> dict:
    """Data statistics, training curve, evaluation table and a working curl line, from the stage outputs."""
    out: dict = {}
    stats = root / "generate" / "stats.json"
    if stats.is_file():
        s = GenerateStats.model_validate_json(stats.read_text())  # typed: a renamed field fails here, loudly
        out["data"] = {
            "examples": s.examples, "requests_planned": s.requests_planned,
            "rejected_after_all_engines": s.requests_rejected_final, "reject_reasons": s.reject_reasons,
            "by_task_type": s.by_task_type, "languages": s.num_languages,
            "validity_per_engine": {g: round(v.valid_rate, 3) for g, v in s.validity_per_engine.items()},
            "engine_restarts": s.engine_restarts,
            "unique_instructions": s.unique_instructions,
            "query_diversity": {t: d.model_dump() for t, d in s.query_diversity.items()},
            "language_check": {lang: c.model_dump() for lang, c in s.language_check.items()},
        }
    report = root / "language" / "report.json"
    if config.language_filter.enabled and report.is_file():
        r = json.loads(report.read_text())
        out["language_filter"] = {k: r[k] for k in ("examples_in", "examples_kept", "removed", "removed_by_language")}
    report = root / "decontaminate" / "report.json"
    if config.decontaminate.enabled and report.is_file():
        r = json.loads(report.read_text())
        out["decontamination"] = {k: r[k] for k in ("examples_in", "examples_kept", "removed", "by_task", "by_rule",
                                                    "eval_texts", "notes", "examples")}
    report = root / "consistency" / "report.json"
    if config.consistency.enabled and report.is_file():
        r = json.loads(report.read_text())
        out["consistency"] = {k: r[k] for k in ("examples_in", "examples_kept", "removed", "scorer", "margin",
                                                "action", "margin_quantiles", "by_task_type")}
    manifest = root / "train" / "manifest.json"
    if manifest.is_file():
        train = json.loads(manifest.read_text())
        curve = [json.loads(line) for line in (root / "train" / "curve.jsonl").read_text().splitlines() if line]
        out["training"] = {
            "steps": train.get("steps"),
            "first_loss": train.get("first_loss"),
            "final_loss": train.get("final_loss"),
            "curve": [(r["step"], round(r["loss"], 4)) for r in curve],
            "curve_png": str(root / "train" / "curve.png"),
        }
    report = root / "evaluate" / "tuned" / "report.md"
    if report.is_file():
        out["evaluation_report"] = str(report)
        out["evaluation_table"] = report.read_text()
    if "deploy" in config.stages:
        base = f"http://127.0.0.1:{config.serve.port}{config.serve.route_prefix.rstrip('/')}"
        body = json.dumps({"model": config.serve.model_name, "input": ["hello world"]})
        key = f" -H \"Authorization: Bearer ${config.serve.api_key_env}\"" if os.environ.get(config.serve.api_key_env) else ""
        out["endpoint"] = base
        out["curl"] = f"curl -s {base}/v1/embeddings -H 'Content-Type: application/json'{key} -d '{body}'"
    return out


def decontamination_lines(d: dict) -> list[str]:
    lines = [f"decontamination: removed {d['removed']} of {d['examples_in']} generated rows overlapping "
             f"{d['eval_texts']} evaluation texts" + (f" (by task: {json.dumps(d['by_task'])})" if d["removed"] else "")]
    lines += [f"  note: {n}" for n in d.get("notes", [])]
    lines += [f"  e.g. {e['field']} {e['text'][:80]!r} ~ {e['eval_task']}: {e['eval_text'][:80]!r} ({e['rule']})"
              for e in d.get("examples", [])]
    return lines


def format_summary(summary: dict) -> str:
    lines = ["", "=" * 72, "synthembed pipeline summary", "=" * 72, f"outputs: {summary['output_root']}"]
    lines.append("stage wall time (s): " + ", ".join(f"{k}={v}" for k, v in summary.get("stage_seconds", {}).items()))
    if "data" in summary:
        lines.append("data: " + json.dumps(summary["data"], default=str)[:1500])
    if "language_filter" in summary:
        f = summary["language_filter"]
        lines.append(f"language filter: removed {f['removed']} of {f['examples_in']} rows in another language than "
                     f"asked ({json.dumps(f['removed_by_language'], ensure_ascii=False)})")
    if "decontamination" in summary:
        lines += decontamination_lines(summary["decontamination"])
    if "consistency" in summary:
        c = summary["consistency"]
        lines.append(f"consistency ({c['scorer']}, margin {c['margin']}, {c['action']}): removed {c['removed']} of "
                     f"{c['examples_in']} rows; margin quantiles {json.dumps(c['margin_quantiles'])}")
    if "training" in summary:
        t = summary["training"]
        lines.append(f"training: {t['steps']} steps, loss {t['first_loss']} -> {t['final_loss']} (curve: {t['curve_png']})")
        lines.append("  curve: " + " ".join(f"{s}:{l}" for s, l in t["curve"]))
    if "evaluation_table" in summary:
        lines += ["evaluation (base vs fine-tuned):", summary["evaluation_table"]]
    if "curl" in summary:
        lines += [f"endpoint: {summary['endpoint']}/v1/embeddings", f"try: {summary['curl']}"]
    return "\n".join(lines)
