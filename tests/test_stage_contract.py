"""The run-folder contract (synthembed.stage) and the one job entry point, on real stages and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthembed import stage
from synthembed.stage import StageFolder

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_complete_means_a_manifest_of_this_fingerprint(tmp_path):
    a = StageFolder(tmp_path / "run", "train", "fp-a")
    assert a.complete() is None
    a.begin("x: 1\n")
    assert a.complete() is None, "begun is not complete"
    (a.path / "manifest.json").write_text("{not json")  # a torn manifest is not a finished run
    assert a.complete() is None
    a.finish({"steps": 3})
    assert a.complete()["steps"] == 3
    assert StageFolder(a.path, "train", "fp-b").complete() is None, "another fingerprint is not complete"
    assert StageFolder(a.path, "evaluate", "fp-a").complete() is None, "another stage is not complete"


def test_begin_keeps_the_same_run_and_moves_another_aside(tmp_path):
    a = StageFolder(tmp_path / "run", "generate", "fp-a").begin()
    (a.path / "examples").mkdir()
    (a.path / "examples" / "part-1.parquet").write_bytes(b"kept")
    StageFolder(a.path, "generate", "fp-a").begin()  # the same run resumes: its parts stay
    assert (a.path / "examples" / "part-1.parquet").read_bytes() == b"kept"
    a.finish({})
    b = StageFolder(a.path, "generate", "fp-b").begin()  # other settings: the old run is moved, not deleted
    assert not (b.path / "examples").exists() and b.complete() is None
    aside = tmp_path / "run.superseded-1"
    assert (aside / "examples" / "part-1.parquet").read_bytes() == b"kept"
    assert json.loads((aside / "manifest.json").read_text())["fingerprint"] == "fp-a"
    # A folder of files no stage claimed is moved aside too, never mixed into a run.
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "results.json").write_text("{}")
    StageFolder(tmp_path / "foreign", "evaluate", "fp").begin()
    assert (tmp_path / "foreign.superseded-1" / "results.json").exists()
    assert not (tmp_path / "foreign" / "results.json").exists()
    # Even a folder that looks like a stage's (config.yaml, results) but has no stage.json: its results
    # belong to an unknown model and must never be reused.
    (tmp_path / "legacy" / "results").mkdir(parents=True)
    (tmp_path / "legacy" / "config.yaml").write_text("model: {source: A}\n")
    (tmp_path / "legacy" / "results" / "STSBenchmark.json").write_text("{}")
    StageFolder(tmp_path / "legacy", "evaluate", "fp-b").begin()
    assert not (tmp_path / "legacy" / "results").exists()
    assert (tmp_path / "legacy.superseded-1" / "results" / "STSBenchmark.json").exists()


def test_an_upstream_change_changes_the_downstream_fingerprint(tmp_path):
    from synthembed.train.config import TrainConfig
    from synthembed.train.run import stage_folder

    data = tmp_path / "generate"
    StageFolder(data, "generate", "plan-1").begin().finish({})
    cfg = TrainConfig.model_validate({"data": [{"path": str(data)}], "storage_path": str(tmp_path), "name": "t"})
    fp1 = stage_folder(cfg).fingerprint
    assert stage_folder(cfg).fingerprint == fp1
    assert stage_folder(cfg.model_copy(update={"checkpoint_every": 99})).fingerprint == fp1, "not a recipe change"
    assert stage_folder(cfg.model_copy(update={"lr": 3e-4})).fingerprint != fp1
    StageFolder(data, "generate", "plan-2").begin().finish({})  # generation re-ran with another plan
    assert stage_folder(cfg).fingerprint != fp1
    labeled = tmp_path / "labeled.parquet"  # an input without a manifest: its files decide
    labeled.write_bytes(b"v1")
    assert stage.input_fingerprint(labeled) != (labeled.write_bytes(b"version 2") and stage.input_fingerprint(labeled))


def test_new_mtimes_on_the_same_evaluation_files_do_not_rerun_decontamination(tmp_path, monkeypatch):
    """A fresh clone, a copy or a re-download gives the same files new mtimes; the stages downstream (a
    training of hours) must not re-run for that, and must re-run when a byte changes."""
    import shutil

    from synthembed.evaluate.config import EvalTask
    from synthembed.synth.decontaminate import DecontaminateConfig
    from synthembed.synth.decontaminate_stage import stage_folder

    monkeypatch.setenv("SYNTHEMBED_CACHE", str(tmp_path / "cache"))
    generated = tmp_path / "generate"
    StageFolder(generated, "generate", "plan-1").begin().finish({})
    evalset = tmp_path / "stsb"
    evalset.mkdir()
    (evalset / "sts-test.tsv").write_text("a cat sits\ta cat sat\t4.0\n")
    fp = lambda task_path: stage_folder(generated, tmp_path / "out", [EvalTask(path=str(task_path))],  # noqa: E731
                                        DecontaminateConfig()).fingerprint
    before = fp(evalset)
    os.utime(evalset / "sts-test.tsv", (1, 1))
    assert fp(evalset) == before, "a new mtime on the same bytes re-ran decontamination (and the training after it)"
    copy = tmp_path / "copy"
    shutil.copytree(evalset, copy)  # new inode and mtime; same name inside, same bytes
    assert stage.files_fingerprint(copy) == stage.files_fingerprint(evalset)
    (evalset / "sts-test.tsv").write_text("a dog sits\ta cat sat\t4.0\n")  # one word changed
    assert fp(evalset) != before


def test_a_file_is_hashed_once_until_its_mtime_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(tmp_path / "cache"))
    reads = []
    real = stage.sha256_of_file
    monkeypatch.setattr(stage, "sha256_of_file", lambda path: reads.append(path) or real(path))
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "a.bin").write_bytes(b"a" * 1000)
    (weights / "b.bin").write_bytes(b"b" * 1000)
    first = stage.files_fingerprint(weights)
    assert len(reads) == 2
    assert stage.files_fingerprint(weights) == first and len(reads) == 2, "the memo was not used"
    os.utime(weights / "a.bin", (5, 5))
    assert stage.files_fingerprint(weights) == first and len(reads) == 3, "a new mtime is re-hashed, once"


def test_file_fingerprints_work_without_a_writable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(blocker / "cache"))  # mkdir fails: no memo
    f = tmp_path / "data.txt"
    f.write_text("one")
    first = stage.files_fingerprint(f)
    f.write_text("two")
    assert stage.files_fingerprint(f) != first


@pytest.mark.slow
def test_evaluating_model_b_into_model_as_folder_never_reports_as_scores(tmp_path, shared_data):
    from synthembed.evaluate import EvaluateConfig, run

    def cfg(source: str) -> EvaluateConfig:
        return EvaluateConfig.model_validate({
            "model": {"source": source, "max_length": 64, "batch_size": 16}, "output_dir": str(tmp_path / "eval"),
            "tasks": [{"path": str(shared_data / "stsbenchmark"), "limit": 40}], "ray": {"enabled": False},
            "cache": False, "classification_protocols": ["mteb"],
        })

    def score(out: Path) -> float:
        return json.loads((out / "manifest.json").read_text())["scores"][0]["score"]

    a = score(run(cfg("tiny-llama")))
    b_out = run(cfg("smollm2-135m"))
    b = score(b_out)
    assert a != b, "model B reported model A's score"
    fp = json.loads((b_out / "manifest.json").read_text())["model_fingerprint"]
    assert fp != json.loads((tmp_path / "eval.superseded-1" / "manifest.json").read_text())["model_fingerprint"]
    assert score(run(cfg("smollm2-135m"))) == b  # the same evaluation again: reused, identical


@pytest.mark.slow
def test_embed_rerun_after_a_kill_writes_each_input_once(ray_cluster, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"text number {i}" for i in range(37)) + "\n")
    out = tmp_path / "emb"
    cmd = [str(VENV_BIN / "python"), "jobs/embed.py", "--set", "model.source=tiny-llama",
           "--set", "rows_per_batch=8", "--input", str(texts), "--output", str(out)]
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6390"}
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    import pyarrow.parquet as pq

    def rows() -> list[str]:
        return pq.read_table(out / "embeddings").column("text").to_pylist()

    assert sorted(rows()) == sorted(f"text number {i}" for i in range(37))
    (out / "manifest.json").unlink()  # killed after writing its outputs, before the manifest
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(rows()) == sorted(f"text number {i}" for i in range(37)), "a resumed embed duplicated rows"
    assert json.loads((out / "manifest.json").read_text())["rows"] == 37


@pytest.mark.parametrize("job", ["generate", "train", "evaluate", "embed", "pipeline"])
def test_every_job_exits_2_naming_a_wrong_key(job, tmp_path):
    section = "" if job == "pipeline" else f"{job}."
    cmd = [str(VENV_BIN / "python"), f"jobs/{job}.py", "--config", "configs/cpu-tiny.yaml",
           "--set", f"{section}no_such_key=1"]
    if job == "embed":
        cmd += ["--input", "x.txt", "--output", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no_such_key" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_wrong_key_through_ray_job_submit_exits_2_with_the_key(ray_cluster):
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", ray_cluster, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", "outputs", "runs", ".git"]}), "--",
           "python", "jobs/train.py", "--config", "configs/cpu-tiny.yaml", "--set", "train.no_such_key=1"]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "no_such_key" in out and "unknown key" in out and 'cli.py", line' not in out
