"""Every text of the configured evaluation tasks, for decontaminating training data (synth.decontaminate).

Local task folders are read with the same loaders as the evaluation (`local_tasks.load_folder`), with the
task's `subsets` but **without** its row limits: a later run with a larger `limit` evaluates on more rows,
and the training data must not hold any of them. Only the evaluated split (`test`) counts; a
classification task's `train` split is what the evaluator fits its classifier on, not what it scores.

Hub tasks (`name` without `path`) are read through mteb only when the hub can be reached; offline
(`HF_HUB_OFFLINE=1`) or on any loading error they are skipped, and a note says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from synthembed.evaluate.config import EvalTask
from synthembed.evaluate.local_tasks import load_folder

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test",)
# Columns that hold identifiers or judgements, not text.
_NOT_TEXT = {"id", "_id", "relevant_docs", "top_ranked", "label", "score"}


def _strings(obj, key: str | None = None) -> Iterator[str]:
    """The strings in nested dicts / lists / `datasets.Dataset`s, except identifier columns."""
    if key in _NOT_TEXT:
        return
    if isinstance(obj, str):
        if obj.strip():
            yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, k)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)
    elif hasattr(obj, "column_names"):  # a datasets.Dataset
        for col in obj.column_names:
            if col not in _NOT_TEXT:
                yield from _strings(obj[col], col)


def _split_texts(subsets: dict) -> Iterator[tuple[str, str]]:
    for subset, splits in subsets.items():
        for split, columns in (splits or {}).items():
            if split in EVAL_SPLITS:
                for text in _strings(columns):
                    yield subset, text


def task_label(spec: EvalTask) -> str:
    return spec.name or (os.path.basename(os.path.normpath(spec.path)) if spec.path else "?")


def task_texts(tasks: list[EvalTask]) -> tuple[list[tuple[str, str]], list[str]]:
    """([(task[/subset], text)], notes): the texts of `tasks`, and a note per task that was skipped."""
    texts: list[tuple[str, str]] = []
    notes: list[str] = []
    for spec in tasks:
        label = task_label(spec)
        if spec.path:
            data = load_folder(spec.path, spec.layout, subsets=spec.subsets)
            found = [(f"{label}/{s}" if s != "default" else label, t) for s, t in _split_texts(data.subsets)]
        else:
            found = _hub_texts(spec, label, notes)
        log.info("decontamination: %d texts from %s", len(found), label)
        texts += found
    return texts, notes


def _hub_texts(spec: EvalTask, label: str, notes: list[str]) -> list[tuple[str, str]]:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        notes.append(f"{label}: hub task not checked (HF_HUB_OFFLINE is set)")
        log.warning("decontamination: %s", notes[-1])
        return []
    try:
        import mteb

        task = mteb.get_task(spec.name, hf_subsets=spec.subsets) if spec.subsets else mteb.get_task(spec.name)
        task.load_data()
        return [(f"{label}/{s}" if s != "default" else label, t) for s, t in _split_texts(task.dataset)]
    except Exception as err:  # offline, a moved dataset, a changed mteb layout: skip the task, say so
        notes.append(f"{label}: hub task not checked ({type(err).__name__}: {str(err)[:200]})")
        log.warning("decontamination: %s", notes[-1])
        return []
