"""Readable outputs: a markdown table comparing runs (and public reference scores), and a PNG chart.

A run folder's `manifest.json` holds its score rows; reports are built from manifests only, so any set
of finished runs can be compared later (`jobs/evaluate.py --compare runA runB`).

Score row: {"task", "subset", "protocol", "metric", "score" (x100), "rows", "full_rows", "source"}.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

PROTOCOL_NOTE = {
    "default": "",
    "mteb": "mteb default (L2-normalised)",
    "paper": "paper (no L2 normalisation)",
}


# ------------------------------------------------------------------------------------ reference file
def parse_reference_scores(path: str | Path, task_names: set[str] | None = None) -> dict[str, dict[tuple[str, str], float]]:
    """Parse REFERENCE_SCORES.md: {model column: {(task, subset): score x100}}.

    Tables whose first column is a task name give subset "default"; otherwise the first column is a subset
    (language, language pair) of the task named in the heading above the table.
    """
    import mteb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference scores file not found: {path}")
    known = set(task_names or ())
    out: dict[str, dict[tuple[str, str], float]] = {}
    heading_task = None
    header: list[str] | None = None

    def is_task(name: str) -> bool:
        if name in known:
            return True
        try:
            mteb.get_task(name)
            return True
        except Exception:
            return False

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            words = re.findall(r"[A-Za-z0-9][A-Za-z0-9_.-]*", line)
            heading_task = next((w for w in words if len(w) > 3 and is_task(w)), None)
            header = None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        label = cells[0]
        if is_task(label):
            key = (label, "default")
        elif heading_task:
            key = (heading_task, label)
        else:
            continue
        for model, cell in zip(header[1:], cells[1:]):
            try:
                out.setdefault(model, {})[key] = float(cell)
            except ValueError:
                continue  # "—": no score
    return out


# ---------------------------------------------------------------------------------------- tables
def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _row_key(row: dict) -> tuple[str, str, str]:
    return (row["task"], row["subset"], row.get("protocol", "default"))


def markdown_report(
    runs: list[dict],
    references: dict[str, dict[tuple[str, str], float]] | None = None,
    reference_models: list[str] | None = None,
    title: str = "Evaluation report",
) -> str:
    """Side-by-side table of runs (manifests), with a delta column for two runs and reference columns."""
    references = references or {}
    ref_models = [m for m in (reference_models or list(references)) if m in references]
    keys: list[tuple[str, str, str]] = []
    meta: dict[tuple[str, str, str], dict] = {}
    for run in runs:
        for row in run["scores"]:
            k = _row_key(row)
            if k not in meta:
                keys.append(k)
                meta[k] = row
    labels = [run["label"] for run in runs]
    lines = [f"# {title}", ""]
    lines.append("Main score of each task x100 (mteb's definition: " + ", ".join(
        sorted({f"{meta[k]['task']}: {meta[k]['metric']}" for k in keys})) + ").")
    lines.append("")
    lines.append("## Runs")
    lines.append("")
    for run in runs:
        model = run.get("model", {})
        lines.append(
            f"- **{run['label']}**: `{model.get('source')}`"
            + (f" + adapter `{model.get('adapter')}`" if model.get("adapter") else "")
            + f" ({run.get('kind')}, max_length {model.get('max_length')}); folder `{run.get('output_dir')}`"
        )
    lines.append("")
    header = ["task", "subset", "protocol", "rows"] + labels
    if len(runs) == 2:
        header.append(f"Δ ({labels[1]} − {labels[0]})")
    header += [f"ref: {m}" for m in ref_models]
    lines.append("## Scores")
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|")
    by_run = [{_row_key(r): r for r in run["scores"]} for run in runs]
    for k in keys:
        row = meta[k]
        rows = f"{row['rows']}" + ("" if row.get("rows") == row.get("full_rows") or row.get("full_rows") is None
                                    else f" of {row['full_rows']}") + (f" ({row['note']})" if row.get("note") else "")
        values = [by_run[i].get(k, {}).get("score") for i in range(len(runs))]
        cells = [row["task"], row["subset"], PROTOCOL_NOTE.get(k[2], k[2]), rows] + [_fmt(v) for v in values]
        if len(runs) == 2:
            cells.append("" if None in values else f"{values[1] - values[0]:+.2f}")
        for m in ref_models:
            ref = references[m].get((row["task"], row["subset"]))
            cells.append(_fmt(ref) if k[2] in ("default", "mteb") else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(meta[k].get("rows") != meta[k].get("full_rows") or meta[k].get("note") for k in keys):
        lines.append("Rows marked 'N of M' or with a reduced corpus were evaluated on a subset: not comparable "
                     "to the reference columns.")
        lines.append("")
    if ref_models:
        lines.append("Reference columns: public MTEB results (see the reference file); comparable only on full sets.")
        lines.append("")
    lines += decontamination_section(runs)
    for run in runs:
        instr = run.get("instructions") or {}
        if instr:
            lines.append(f"### Instructions used by {run['label']}")
            lines.append("")
            lines.append("| task | side | instruction |")
            lines.append("|---|---|---|")
            for (task_side, text) in sorted(instr.items()):
                task, side = task_side.split("|", 1)
                lines.append(f"| {task} | {side} | {text if text else '(none: raw text)'} |")
            lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A text as one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def decontamination_section(runs: list[dict]) -> list[str]:
    """Per run trained on decontaminated data: how many generated rows overlapped the evaluation texts."""
    lines = []
    for run in runs:
        d = run.get("training_data_decontamination")
        if not d:
            continue
        lines += [f"## Training data of {run['label']}: decontamination", ""]
        if d.get("error"):
            lines += [f"Report not readable: {d['error']}", ""]
            continue
        by_task = ", ".join(f"{t}: {n}" for t, n in (d.get("by_task") or {}).items()) or "none"
        lines.append(f"Removed **{d['removed']}** of {d['examples_in']} generated rows before training: a text "
                     f"overlapped one of {d['eval_texts']} evaluation texts (by task: {by_task}).")
        lines += [f"- note: {n}" for n in d.get("notes") or []]
        lines.append("")
        if d.get("examples"):
            lines += ["| field | generated text | evaluation task | evaluation text | rule |", "|---|---|---|---|---|"]
            lines += [f"| {e['field']} | {_cell(e['text'])} | {e['eval_task']} | {_cell(e['eval_text'])} | {e['rule']} |"
                      for e in d["examples"]]
            lines.append("")
    return lines


def plot_chart(runs: list[dict], path: str | Path, references: dict | None = None, reference_models: list[str] | None = None) -> Path:
    """Grouped horizontal bars: one group per (task, subset, protocol), one bar per run / reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    references = references or {}
    ref_models = [m for m in (reference_models or list(references)) if m in references]
    keys: list[tuple[str, str, str]] = []
    for run in runs:
        for row in run["scores"]:
            if _row_key(row) not in keys:
                keys.append(_row_key(row))
    series = []
    for run in runs:
        lookup = {_row_key(r): r["score"] for r in run["scores"]}
        series.append((run["label"], [lookup.get(k, np.nan) for k in keys]))
    for m in ref_models:
        series.append((f"ref: {m}", [references[m].get((k[0], k[1]), np.nan) if k[2] in ("default", "mteb") else np.nan for k in keys]))
    n, s = len(keys), max(len(series), 1)
    height = 0.8 / s
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.35 * n * s + 1.2)))
    y = np.arange(n)
    for i, (label, values) in enumerate(series):
        ax.barh(y + i * height, values, height=height, label=label)
    reduced = {_row_key(r) for run in runs for r in run["scores"]
               if r.get("note") or (r.get("full_rows") is not None and r.get("rows") != r.get("full_rows"))}
    names = [f"{t}" + (f" [{sub}]" if sub != "default" else "") + (f" ({p})" if p not in ("default", "mteb") else "")
             + (" *subset" if (t, sub, p) in reduced else "") for t, sub, p in keys]
    ax.set_yticks(y + height * (s - 1) / 2)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("main score x100" + ("   (*subset: not comparable to references)" if reduced else ""))
    ax.set_xlim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_run(folder: str | Path) -> dict:
    """A finished run's manifest (raises if the run is not finished)."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{folder}: no manifest.json (not an evaluation run folder, or the run did not finish)")
    return json.loads(manifest.read_text())


def write_report(
    runs: list[dict],
    out_dir: str | Path,
    reference_scores: str | Path | None = None,
    reference_models: list[str] | None = None,
    title: str = "Evaluation report",
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = None
    if reference_scores:
        tasks = {r["task"] for run in runs for r in run["scores"]}
        refs = parse_reference_scores(reference_scores, tasks)
    md = out_dir / "report.md"
    md.write_text(markdown_report(runs, refs, reference_models, title) + "\n", encoding="utf-8")
    png = plot_chart(runs, out_dir / "chart.png", refs, reference_models)
    return md, png


def compare(folders: list[str | Path], out_dir: str | Path, reference_scores: str | Path | None = None,
            reference_models: list[str] | None = None) -> Path:
    """Side-by-side report of finished runs; returns the report path."""
    runs = [load_run(f) for f in folders]
    md, _ = write_report(runs, out_dir, reference_scores, reference_models,
                         title="Comparison: " + " vs ".join(r["label"] for r in runs))
    return md
