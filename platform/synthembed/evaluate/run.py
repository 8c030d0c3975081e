"""`run(config) -> Path`: score one model on a list of tasks and write the run folder.

    <output_dir>/
      config.yaml                    the resolved config
      results/<Task>[.paper].json    mteb-format TaskResult per task (and per classification protocol)
      report.md, chart.png           this run (plus `compare_with` runs and reference scores)
      manifest.json                  score rows + provenance; written last = the run is complete

The folder follows the stage contract (synthembed.stage) under a fingerprint of the tasks, the protocol
settings and the **model's fingerprint** (its weight files, adapter, truncation, dtype): a re-run of the
same evaluation reuses its finished per-task result files (unless `overwrite`); evaluating another model,
or a re-trained one, into the same folder moves the old run aside instead of reporting its scores. The
embedding cache makes any re-encoding of an already-seen text free.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from synthembed import stage
from synthembed.config import dump_config
from synthembed.errors import StageError
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.config import EvaluateConfig, EvalTask
from synthembed.evaluate.encoders import make_spec
from synthembed.evaluate.local_tasks import build_task, load_folder
from synthembed.evaluate.report import load_run, write_report
from synthembed.model.threads import use_driver_threads
from synthembed.packaged import cache_dir

log = logging.getLogger(__name__)


class HubTaskError(StageError):
    """An mteb task could not be loaded from the hub (e.g. offline)."""


def load_task(spec: EvalTask):
    """(mteb task with data loaded, provenance dict)."""
    import mteb

    if spec.path:
        data = load_folder(spec.path, spec.layout, limit=spec.limit, subsets=spec.subsets,
                           corpus_limit=spec.corpus_limit, train_limit=spec.train_limit)
        task = build_task(data, spec.name)
        return task, {"source": f"local:{data.path}", "layout": data.layout, "rows": data.rows,
                      "full_rows": data.full_rows, "notes": data.notes}
    try:
        task = mteb.get_task(spec.name, hf_subsets=spec.subsets) if spec.subsets else mteb.get_task(spec.name)
    except KeyError as err:
        raise HubTaskError(f"tasks[].name={spec.name!r}: not an mteb task ({err})") from None
    try:
        task.load_data()
    except Exception as err:  # datasets/hub raise many types; all mean "could not get it"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        raise HubTaskError(
            f"tasks[].name={spec.name!r}: could not load its data from the Hugging Face hub "
            f"({type(err).__name__}: {str(err)[:300]})"
            + (" — HF_HUB_OFFLINE=1 is set" if offline else "")
            + ". Offline, give a local copy instead: `path: <folder>` (layouts: stsbenchmark, stsb_multi_mt, "
            "beir, tatoeba, banking77)."
        ) from None
    return task, {"source": f"hub:{task.metadata.dataset['path']}@{task.metadata.dataset.get('revision')}",
                  "layout": None, "rows": {}, "full_rows": {}, "notes": {}}


def _score_rows(task_result, task, provenance: dict, protocol: str) -> list[dict]:
    rows = []
    for split, entries in task_result.scores.items():
        for entry in entries:
            subset = entry.get("hf_subset", "default")
            rows.append(
                {
                    "task": task.metadata.name,
                    "subset": subset,
                    "split": split,
                    "protocol": protocol,
                    "metric": task.metadata.main_score,
                    "score": round(100 * float(entry["main_score"]), 4),
                    "rows": provenance["rows"].get(subset),
                    "full_rows": provenance["full_rows"].get(subset),
                    "note": provenance["notes"].get(subset),
                    "source": provenance["source"],
                }
            )
    return rows


def _protocols(task, config: EvaluateConfig, kind: str) -> list[str]:
    if task.metadata.type not in ("Classification", "MultilabelClassification"):
        return ["default"]
    protos = list(config.classification_protocols) or ["mteb"]
    if kind != "decoder":
        # A sentence-transformers model's own pipeline decides normalisation (MiniLM ends in Normalize).
        protos = ["mteb"]
    return protos


def build_encoder(config: EvaluateConfig):
    """The mteb-facing encoder (with cache and Ray options) for `config.model`."""
    from synthembed.evaluate.wrapper import SynthEmbedEncoder  # deferred: imports mteb

    spec = make_spec(config.model, config.model.kind)
    cache = None
    if config.cache:
        cache = EmbeddingCache(config.cache_path or cache_dir() / "embeddings.sqlite", spec.fingerprint())
    ray_options = None
    if config.ray.enabled:
        ray_options = {
            "num_workers": config.ray.num_workers,
            "batch_size": config.ray.batch_size,
            "cpus_per_worker": config.ray.cpus_per_worker,
            "address": config.ray.address,
            "min_texts": config.ray.min_texts,
        }
    instructions = {t.name or "": t.instruction for t in config.tasks if t.instruction}
    label = config.model.name or Path(config.model.source).name
    return SynthEmbedEncoder(
        spec,
        name=label,
        instructions=instructions or None,
        normalize=config.model.normalize,
        cache=cache,
        ray_options=ray_options,
        show_progress=config.show_progress,
    )


# What decides the scores (besides the model): not output places, reports, progress or caching.
_NOT_FINGERPRINTED = {"output_dir", "compare_with", "reference_scores", "reference_models", "show_progress",
                      "overwrite", "cache", "cache_path", "ray", "model", "decontamination_report"}


def stage_folder(config: EvaluateConfig, model_fingerprint: str | None = None) -> stage.StageFolder:
    if model_fingerprint is None:
        model_fingerprint = make_spec(config.model, config.model.kind).fingerprint()
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    return stage.StageFolder(config.output_dir, "evaluate", stage.fingerprint(settings, model_fingerprint))


def _decontamination(path: str) -> dict:
    """The decontamination report of the training data, for the report (a missing file is said, not fatal)."""
    import json

    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        return {"error": f"{path}: {err}"}
    keys = ("examples_in", "examples_kept", "removed", "by_task", "by_rule", "eval_texts", "notes", "examples")
    return {"report": str(path), **{k: r.get(k) for k in keys}}


def run(config: EvaluateConfig) -> Path:
    """Evaluate `config.model` on `config.tasks`; return the output folder (see the module docstring)."""
    import mteb  # deferred: a second to import, and `--check` never needs it
    from mteb.results import TaskResult

    started = time.time()
    tasks = []
    for spec in config.tasks:  # load (and validate) every task before any model work starts
        task, provenance = load_task(spec)
        if spec.instruction and spec.name is None:
            raise ValueError("tasks[].instruction needs tasks[].name (the task it applies to)")
        tasks.append((spec, task, provenance))

    threads = use_driver_threads(config.torch_threads)  # in a Ray job's driver torch would run on one core
    encoder = build_encoder(config)
    folder = stage_folder(config, encoder.spec.fingerprint())
    out = folder.path
    if folder.complete():
        log.info("%s: this model was already evaluated on these tasks; reusing the run", out)
        return out
    folder.begin(dump_config(config))  # another model's (or settings') run is moved aside
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    label = config.model.name or Path(config.model.source).name
    scores: list[dict] = []
    timings: dict[str, float] = {}
    for spec, task, provenance in tasks:
        for protocol in _protocols(task, config, encoder.spec.kind):
            suffix = "" if protocol in ("default", "mteb") else f".{protocol}"
            result_file = results_dir / f"{task.metadata.name}{suffix}.json"
            if result_file.exists() and not config.overwrite:
                log.info("%s: reusing %s", task.metadata.name, result_file)
                task_result = TaskResult.from_disk(result_file)
            else:
                encoder.normalize_classification = protocol != "paper" and config.model.normalize
                model_result = mteb.evaluate(encoder, task, cache=None, overwrite_strategy="always",
                                             show_progress_bar=config.show_progress,
                                             encode_kwargs={"batch_size": config.model.batch_size})
                task_result = model_result.task_results[0]
                tmp = result_file.with_name(f".{result_file.name}.tmp")
                task_result.to_disk(tmp)
                tmp.replace(result_file)  # a result file on disk is always whole
            # mteb's own timing, so a re-run that reuses result files still reports it
            timings[f"{task.metadata.name}{suffix}"] = round(float(task_result.evaluation_time or 0.0), 2)
            rows = _score_rows(task_result, task, provenance, protocol)
            for row in rows:
                row["result_file"] = str(result_file.relative_to(out))
            scores.extend(rows)
            log.info("%s (%s): %s", task.metadata.name, protocol,
                     ", ".join(f"{r['subset']}={r['score']:.2f}" for r in rows))

    instructions = {}
    for call in encoder.calls:
        instructions[f"{call['task']}|{call['side'] or 'all'}"] = call["instruction"]
    manifest = {
        "label": label,
        "kind": encoder.spec.kind,
        "model": {**config.model.model_dump(mode="json"), "max_length": encoder.spec.max_length},
        "model_fingerprint": encoder.spec.fingerprint(),
        "output_dir": str(out),
        "scores": scores,
        "instructions": instructions,
        "encode_stats": encoder.stats,
        "torch_threads": threads,
        "task_seconds": timings,
        "seconds": round(time.time() - started, 2),
        "mteb_version": mteb.__version__,
    }
    if config.decontamination_report:
        manifest["training_data_decontamination"] = _decontamination(config.decontamination_report)
    others = [load_run(p) for p in config.compare_with]
    # report and chart first, manifest last: a folder with a manifest is complete
    write_report([*others, manifest], out, config.reference_scores, config.reference_models,
                 title=f"Evaluation: {label}")
    folder.finish(manifest)
    if encoder.cache is not None:
        encoder.cache.close()
    log.info("evaluation written to %s", out)
    return out
