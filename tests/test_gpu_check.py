"""bench/gpu_check.py runs end to end in its CPU `--tiny` mode, so the GPU device check never rots."""

from __future__ import annotations

import json
import subprocess

from conftest import REPO, VENV_BIN


def test_gpu_check_tiny_runs_on_cpu_and_both_sides_agree(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([str(VENV_BIN / "python"), "bench/gpu_check.py", "--tiny", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["gpu_figure"] is False and "NOT a GPU figure" in report["note"]
    # LoRA B starts at zero: both sides' first step is the base model on the same batch
    assert report["first_loss_diff"] < 1e-4, report["first_loss_diff"]
    assert report["bf16_vs_fp32"]["ok"], report["bf16_vs_fp32"]
    for side in ("ours", "st_cached_mnrl"):
        assert len(report[side]["losses"]) == 4 and report[side]["examples_per_s"] > 0
    assert report["model"]["architecture"].startswith("MistralModel") and report["batch"]["texts_per_step"] == 12
