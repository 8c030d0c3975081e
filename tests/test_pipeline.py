"""The end-to-end pipeline job: bad configs fail before compute; a job killed during training and
resubmitted does not redo generation, resumes training and ends with a working endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SHARED_DATA, VENV_BIN


def _check(tmp_path, config: dict, *overrides: str) -> subprocess.CompletedProcess:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [str(VENV_BIN / "python"), "jobs/pipeline.py", "--config", str(path), "--check"]
    for item in overrides:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def _profile(root: Path) -> dict:
    return {
        "output_root": str(root),
        "generate": {
            "num_examples": 12, "min_per_type": 2, "tasks_per_brainstorm": 3, "examples_per_task": 2,
            "lengths": {"short_min": 1, "short_max": 60, "long_min": 20, "long_max": 160},
            "brainstorm_max_chars": 100, "commit_every": 4,
            "language_check": "flag",  # the 135M model answers many languages in English; keep enough rows
            "engine": {"kind": "embedded", "model": "smollm2-135m", "batch_size": 4, "sampling": {"max_tokens": 300, "repetition_penalty": 1.1}},
        },
        "train": {
            "model": {"source": "smollm2-135m", "max_length": 32},
            # a few generated rows, many epochs: max_steps decides, so the kill lands mid-run
            "batch_size": 4, "epochs": 50, "max_steps": 10, "warmup_steps": 2, "checkpoint_every": 2,
            "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
        },
        "evaluate": {
            "model": {"max_length": 32, "batch_size": 32},
            "tasks": [{"path": str(SHARED_DATA / "stsbenchmark"), "limit": 60}],
            "ray": {"enabled": False},
            "classification_protocols": ["mteb"],
        },
        "serve": {"model": {"max_length": 64}, "deployment": {"num_cpus": 0.5}},
    }


def test_check_plans_on_the_wired_data(tmp_path):
    # train.data is not given: the pipeline trains on its own generate output, estimated by num_examples
    proc = _check(tmp_path, _profile(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train plan: 12 examples (estimated" in proc.stdout and "10 steps in all" in proc.stdout


def test_bad_key_fails_before_compute(tmp_path):
    proc = _check(tmp_path, _profile(tmp_path / "run"), "train.learning_rate=1e-4")
    assert proc.returncode != 0
    assert "train.learning_rate: unknown key" in proc.stderr and "lr" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_bad_value_fails_naming_the_key(tmp_path):
    proc = _check(tmp_path, _profile(tmp_path / "run"), "stages=[train,generate]")
    assert proc.returncode != 0 and "stages must keep the order" in proc.stderr


def test_missing_input_fails_before_compute(tmp_path):
    config = _profile(tmp_path / "run")
    config["train"]["data"] = [{"path": str(tmp_path / "labeled.parquet")}]
    config["evaluate"]["tasks"].append({"path": str(tmp_path / "no-such-task")})
    proc = _check(tmp_path, config)
    assert proc.returncode != 0
    assert "train.data[0].path" in proc.stderr and "evaluate.tasks[1].path" in proc.stderr
    assert not (tmp_path / "run").exists()


def _submit(address: str, submission_id: str, config: Path, wait: bool, extra: list[str] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--submission-id", submission_id,
           "--runtime-env-json", json.dumps({"env_vars": {"SYNTHEMBED_WORKDIR": str(REPO), "HF_HUB_OFFLINE": "1"}})]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", "python", "jobs/pipeline.py", "--config", str(config), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)


def _labeled_rows(path: Path, n: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    topics = ["tea", "rivers", "violins", "glaciers", "bread", "comets", "bridges", "owls"][:n]
    pq.write_table(pa.table({
        "query": [f"what is known about {t}?" for t in topics],
        "positive": [f"A short encyclopedia entry about {t}." for t in topics],
        "hard_negative": [f"A shopping list that mentions {t} once." for t in topics],
        "instruction": ["Given a question, retrieve a passage that answers it"] * len(topics),
    }), path)
    return path


@pytest.mark.slow
def test_killed_during_training_then_resubmitted_resumes(ray_cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    root = tmp_path / "run"
    config = _profile(root)
    # The 135M generator's yield varies (CI once kept 3 valid rows of 12, fewer than one batch): a few labeled
    # rows mixed in give the run its 10 steps whatever the yield; the generated rows are trained on too.
    config["train"]["data"] = [{"path": str(_labeled_rows(tmp_path / "labeled.parquet", 8))}]
    config_path = tmp_path / "profile.yaml"
    config_path.write_text(yaml.safe_dump(config))
    client = JobSubmissionClient(ray_cluster)
    first = f"pipeline-a-{os.getpid()}"
    proc = _submit(ray_cluster, first, config_path, wait=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    deadline = time.time() + 1200
    while time.time() < deadline:  # kill as soon as training has written its first checkpoint
        if list((root / "train").glob("checkpoint_*")):
            break
        status = client.get_job_status(first)
        assert status not in (JobStatus.FAILED, JobStatus.SUCCEEDED), client.get_job_logs(first)[-4000:]
        time.sleep(2)
    else:
        pytest.fail("training never wrote a checkpoint:\n" + client.get_job_logs(first)[-4000:])
    client.stop_job(first)
    while client.get_job_status(first) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
        time.sleep(1)
    assert client.get_job_status(first) != JobStatus.SUCCEEDED
    assert not (root / "train" / "manifest.json").exists()

    generated = {p: p.stat().st_mtime_ns for p in (root / "generate").rglob("*.parquet")}
    assert (root / "generate" / "manifest.json").exists() and generated

    second = f"pipeline-b-{os.getpid()}"
    proc = _submit(ray_cluster, second, config_path, wait=True)
    logs = client.get_job_logs(second)
    assert proc.returncode == 0 and client.get_job_status(second) == JobStatus.SUCCEEDED, logs[-5000:]

    assert "stage generate: complete" in logs and "stage generate: starting" not in logs
    assert {p: p.stat().st_mtime_ns for p in (root / "generate").rglob("*.parquet")} == generated
    manifest = json.loads((root / "train" / "manifest.json").read_text())
    assert manifest["steps"] == manifest["total_steps"] == 10
    steps = [json.loads(line)["step"] for line in (root / "train" / "curve.jsonl").read_text().splitlines() if line]
    assert steps == list(range(1, 11))  # one record per step: the resumed run continued, it did not restart

    summary = json.loads((root / "summary.json").read_text())
    assert "fine-tuned" in summary["evaluation_table"] and "base" in summary["evaluation_table"]
    # the evaluation encodes in the job's driver, which Ray starts with OMP_NUM_THREADS=1: it must use every core
    from synthembed.model.threads import available_cores

    for run in ("base", "tuned"):
        assert json.loads((root / "evaluate" / run / "manifest.json").read_text())["torch_threads"] == available_cores()
    data = summary["data"]  # the generate stage's statistics reach the summary, field by field
    stats = json.loads((root / "generate" / "stats.json").read_text())
    assert data["examples"] == stats["examples"] > 0 and data["languages"] == stats["num_languages"] >= 1
    assert data["rejected_after_all_engines"] == stats["requests_rejected_final"]
    assert set(data["validity_per_engine"]) == set(stats["validity_per_engine"]) == {"embedded:smollm2-135m"}
    assert data["reject_reasons"] == stats["reject_reasons"]
    # every task type with rows has its query diversity, counted over those rows
    assert set(data["query_diversity"]) == set(stats["by_task_type"])
    assert all(1 <= d["unique_queries"] <= stats["by_task_type"][t] for t, d in data["query_diversity"].items())

    # Training re-runs with another recipe: the evaluation re-runs too and reports the new model.
    tuned_before = json.loads((root / "evaluate" / "tuned" / "manifest.json").read_text())
    third = f"pipeline-c-{os.getpid()}"
    proc = _submit(ray_cluster, third, config_path, wait=True, extra=["--set", "train.max_steps=6"])
    logs = client.get_job_logs(third)
    assert proc.returncode == 0 and client.get_job_status(third) == JobStatus.SUCCEEDED, logs[-5000:]
    assert "stage generate: complete" in logs and "stage train: starting" in logs and "stage evaluate: starting" in logs
    assert json.loads((root / "train" / "manifest.json").read_text())["steps"] == 6
    tuned_after = json.loads((root / "evaluate" / "tuned" / "manifest.json").read_text())
    assert tuned_after["model_fingerprint"] != tuned_before["model_fingerprint"]
    assert (root / "train.superseded-1" / "manifest.json").exists(), "the first training run was kept"
    request = urllib.request.Request(
        summary["endpoint"] + "/v1/embeddings",
        data=json.dumps({"input": ["hello world"], "model": "merged"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert len(body["data"][0]["embedding"]) == 576  # SmolLM2's hidden size: the fine-tuned model is served
