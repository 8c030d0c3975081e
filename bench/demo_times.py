"""`make demo` wall time per stage, for several runs side by side (e.g. before and after a change).

Each run is a finished demo: its `summary.json` (stage seconds, as the pipeline measured them) and, when
given, the `make demo` log whose `/usr/bin/time -v` lines give the whole command's wall time (setup
included). The commit and the dtype `auto` picked are recorded per run, from the run's own folders.

    .venv/bin/python bench/demo_times.py before=/path/a/outputs/pipeline:/path/a.log after=outputs/pipeline:b.log
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


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
    rec = {"output_root": str(root), "stage_seconds": stages, "pipeline_seconds": round(sum(numeric), 1),
           "examples": summary.get("data", {}).get("examples")}
    if log is not None and log.is_file():
        rec["make_demo_wall_s"] = wall_from_time_log(log)
        text = log.read_text(errors="replace")
        m = re.search(r"pipeline finished in (\d+) s", text)
        rec["submitted_job_s"] = int(m.group(1)) if m else None
    return rec


def main() -> None:
    runs = {}
    for arg in sys.argv[1:]:
        label, _, paths = arg.partition("=")
        root, _, log = paths.partition(":")
        runs[label] = run_record(Path(root).resolve(), Path(log) if log else None)
        print(label, json.dumps(runs[label]))
    labels = list(runs)
    payload = {"runs": runs}
    if len(labels) >= 2:
        a, b = runs[labels[0]], runs[labels[-1]]
        payload["speedup_pipeline"] = round(a["pipeline_seconds"] / b["pipeline_seconds"], 2)
        payload["speedup_per_stage"] = {k: round(a["stage_seconds"][k] / v, 2) for k, v in b["stage_seconds"].items()
                                        if isinstance(v, (int, float)) and isinstance(a["stage_seconds"].get(k), (int, float)) and v}
    payload["command"] = "python bench/demo_times.py " + " ".join(sys.argv[1:])
    print(f"wrote {write_result('demo', payload)}")


if __name__ == "__main__":
    main()
