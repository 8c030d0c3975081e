"""`make demo` wall time per stage, for several runs side by side (e.g. before and after a change).

Each run is a finished demo: its `summary.json` (stage seconds, as the pipeline measured them) and, when
given, the `make demo` log whose `/usr/bin/time -v` lines give the whole command's wall time (setup
included). Each run also records the CPU it ran on (this script runs on the machine that ran the demos):
one machine kind comes with and without AMX, and the stage times differ by 2-4x between the two.

    .venv/bin/python bench/demo_times.py before=/path/a/outputs/pipeline:/path/a.log after=outputs/pipeline:b.log

`--note=TEXT` adds a note on these runs. `--keep` keeps the runs already in bench/results/demo.json
(their folders may be gone) and adds these. The speed-ups compare the first and the last run named on
this command line (`--against=LABEL` puts a kept run first): name two runs of one machine. A run added
alone with `--keep` leaves the kept comparison in place.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_result  # noqa: E402


def wall_from_time_log(log: Path) -> float | None:
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", log.read_text(errors="replace"))
    if not m:
        return None
    h, mnt, sec = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + float(sec)


def run_record(root: Path, log: Path | None) -> dict:
    summary = json.loads((root / "summary.json").read_text())
    stages = {k: v for k, v in summary.get("stage_seconds", {}).items()}
    numeric = [v for v in stages.values() if isinstance(v, (int, float))]
    here = machine()
    rec = {"output_root": str(root), "stage_seconds": stages, "pipeline_seconds": round(sum(numeric), 1),
           "examples": summary.get("data", {}).get("examples"),
           "machine": {"cpu": here["cpu"], "cpu_bf16_flags": here["cpu_bf16_flags"]}}
    if log is not None and log.is_file():
        rec["make_demo_wall_s"] = wall_from_time_log(log)
        text = log.read_text(errors="replace")
        m = re.search(r"pipeline finished in (\d+) s", text)
        rec["submitted_job_s"] = int(m.group(1)) if m else None
    return rec


COMPARISON_KEYS = ("speedup_pipeline", "speedup_per_stage", "compared")


def previous_runs() -> tuple[dict, list[str], dict]:
    """The runs, notes and comparison of the committed demo.json, each run with the machine it ran on (older
    files recorded it once for all)."""
    path = RESULTS / "demo.json"
    if not path.is_file():
        return {}, [], {}
    old = json.loads(path.read_text())
    runs = {label: {"machine": {"cpu": old.get("machine", {}).get("cpu")}, **rec}
            for label, rec in old.get("runs", {}).items()}
    notes = old.get("notes") or ([old["note"]] if "note" in old else [])
    return runs, notes, {k: old[k] for k in COMPARISON_KEYS if k in old}


def main() -> None:
    args = sys.argv[1:]
    keep = "--keep" in args
    new_notes = [a.split("=", 1)[1] for a in args if a.startswith("--note=")]
    against = [a.split("=", 1)[1] for a in args if a.startswith("--against=")]
    args = [a for a in args if a != "--keep" and not a.startswith(("--note=", "--against="))]
    runs, notes, comparison = previous_runs() if keep else ({}, [], {})
    notes = notes + new_notes
    labels = list(against)
    for arg in args:
        label, _, paths = arg.partition("=")
        root, _, log = paths.partition(":")
        runs[label] = run_record(Path(root).resolve(), Path(log) if log else None)
        labels.append(label)
        print(label, json.dumps(runs[label]))
    payload = {"runs": runs, "notes": notes}
    if len(labels) >= 2:
        a, b = runs[labels[0]], runs[labels[-1]]
        payload["speedup_pipeline"] = round(a["pipeline_seconds"] / b["pipeline_seconds"], 2)
        payload["speedup_per_stage"] = {k: round(a["stage_seconds"][k] / v, 2) for k, v in b["stage_seconds"].items()
                                        if isinstance(v, (int, float)) and isinstance(a["stage_seconds"].get(k), (int, float)) and v}
        payload["compared"] = labels[:1] + labels[-1:]
    else:  # a run added on its own (another machine, say) leaves the kept comparison as it was
        payload.update(comparison)
    payload["command"] = "python bench/demo_times.py " + " ".join(sys.argv[1:])
    print(f"wrote {write_result('demo', payload)}")


if __name__ == "__main__":
    main()
