"""Every stage survives a hard kill at three points and ends as an uninterrupted run would.

For each stage (generate, train, evaluate, embed), one run folder goes through:

1. SIGKILL of the job's whole process group as soon as `stage.json` appears (before its first output);
2. a resubmit, SIGKILLed as soon as its first output appears (mid-way: a committed part, a checkpoint,
   one task's result file, one embedding part);
3. a resubmit that finishes, then its `manifest.json` removed: the state a kill after the outputs but
   before the manifest leaves (the manifest is written right after the outputs, too close to hit with a
   signal; removing it gives exactly that state);
4. a last resubmit, which must finish.

Its outputs are then compared with those of a second folder that ran once, uninterrupted: same ids, no
duplicates, no temporary file left to be trusted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SHARED_DATA, VENV_BIN
from synth_helpers import resolved

pytestmark = pytest.mark.slow

ENV = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6390", "RAY_AUTH_MODE": "token"}


def _kill_when(cmd: list[str], ready: Callable[[], bool], log: Path, timeout: float = 400) -> None:
    """Start `cmd` in its own process group and SIGKILL the group once `ready()`; fail if it ends first."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, f"the job ended before the kill point:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"kill point not reached in {timeout} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # no cleanup code runs, in the driver or its children
        proc.wait()


def _finish(cmd: list[str], log: Path) -> None:
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    log.write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]


def _through_three_kills(cmd: Callable[[Path], list[str]], out: Path, first_output: Callable[[Path], bool],
                         logs: Path) -> None:
    c = cmd(out)
    _kill_when(c, lambda: (out / "stage.json").is_file(), logs / "kill1.log")
    assert not (out / "manifest.json").exists()
    _kill_when(c, lambda: first_output(out), logs / "kill2.log")
    assert not (out / "manifest.json").exists()
    _finish(c, logs / "finish.log")
    (out / "manifest.json").unlink()
    _finish(c, logs / "resume.log")
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert not list(out.parent.glob(f"{out.name}.superseded-*")), "a resume of the same run moved it aside"
    leftovers = [p for p in out.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not leftovers, f"temporary files left in a finished run: {leftovers}"


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


# ----------------------------------------------------------------------------------------- generate
def _generate_cmd(out: Path) -> list[str]:
    return [str(VENV_BIN / "python"), "jobs/generate.py", "--config", "configs/cpu-tiny.yaml",
            "--set", f"generate.output_dir={out}", "--set", "generate.num_examples=8",
            "--set", "generate.task_mix={sts: 1, bitext: 1}", "--set", "generate.min_per_type=0",
            "--set", "generate.engine.batch_size=2", "--set", "generate.commit_every=2",
            "--set", "generate.fallback=null", "--set", "generate.engine.sampling.max_tokens=200",
            "--set", "generate.languages=[English, German]"]


def test_generate_killed_at_three_points(ray_cluster, tmp_path):
    out, ref = tmp_path / "gen", tmp_path / "gen-ref"
    _through_three_kills(_generate_cmd, out, lambda o: bool(_parts(o / "examples") or _parts(o / "rejects")), tmp_path)
    _finish(_generate_cmd(ref), tmp_path / "ref.log")
    plan, examples, _ = resolved(out)  # every planned request ends exactly once; example ids unique
    ref_plan, _, _ = resolved(ref)
    assert sorted(plan) == sorted(ref_plan) and len(plan) == 8
    # Read the part files raw (the ledger's reader could hide a duplicate): each request at most once.
    raw = [i for p in _parts(out / "examples") for i in pq.read_table(p).column("request_id").to_pylist()]
    assert len(raw) == len(set(raw)) == len(examples)


# ----------------------------------------------------------------------------------------- train
def _train_config(tmp_path: Path) -> Path:
    from train_helpers import toy_rows, write_examples

    write_examples(tmp_path / "data" / "part-0.parquet", toy_rows(24))
    train = {"model": {"source": "tiny-llama", "max_length": 48}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
             "data": [{"path": str(tmp_path / "data")}], "temperature": 0.05, "batch_size": 8, "epochs": 20,
             "max_steps": 16, "warmup_steps": 2, "checkpoint_every": 2, "storage_path": str(tmp_path / "runs"),
             "torch_threads": 1}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    return path


def test_train_killed_at_three_points(ray_cluster, tmp_path):
    cfg = _train_config(tmp_path)
    cmd = lambda o: [str(VENV_BIN / "python"), "jobs/train.py", "--config", str(cfg),  # noqa: E731
                     "--set", f"train.name={o.name}"]
    out, ref = tmp_path / "runs" / "killed", tmp_path / "runs" / "ref"
    _through_three_kills(cmd, out, lambda o: any(o.glob("checkpoint_*/lora_weights.safetensors")), tmp_path)
    _finish(cmd(ref), tmp_path / "ref.log")
    curve = lambda o: [json.loads(x) for x in (o / "curve.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in curve(out)] == list(range(1, 17)), "a step lost or repeated"
    # Resumed from checkpoints, the run computes the same losses as the run that was never stopped.
    assert [r["loss"] for r in curve(out)] == pytest.approx([r["loss"] for r in curve(ref)], abs=1e-4)
    assert json.loads((out / "manifest.json").read_text())["steps"] == 16
    plan = json.loads((out / "plan.json").read_text())  # the plan written before training matches the run
    assert (plan["total_steps"], plan["warmup_steps"], plan["examples"]) == (16, 2, 24)
    assert (out / "merged" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_killed_at_three_points(tmp_path):
    tasks = [{"path": str(SHARED_DATA / "stsbenchmark"), "limit": 60},
             {"path": str(SHARED_DATA / "stsb_multi_mt"), "subsets": ["de"], "limit": 60},
             {"path": str(SHARED_DATA / "tatoeba"), "subsets": ["deu-eng"], "limit": 60}]
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"evaluate": {
        "model": {"source": "smollm2-135m", "max_length": 48, "batch_size": 16}, "tasks": tasks,
        "ray": {"enabled": False}, "cache": False, "classification_protocols": ["mteb"]}}))
    cmd = lambda o: [str(VENV_BIN / "python"), "jobs/evaluate.py", "--config", str(cfg),  # noqa: E731
                     "--set", f"evaluate.output_dir={o}"]
    out, ref = tmp_path / "eval", tmp_path / "eval-ref"
    _through_three_kills(cmd, out, lambda o: bool(list((o / "results").glob("*.json"))), tmp_path)
    _finish(cmd(ref), tmp_path / "ref.log")
    scores = lambda o: sorted((r["task"], r.get("subset"), r["score"])  # noqa: E731
                              for r in json.loads((o / "manifest.json").read_text())["scores"])
    assert scores(out) == scores(ref) and len(scores(out)) == 3
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(p.name for p in (ref / "results").iterdir())


# ----------------------------------------------------------------------------------------- embed
def test_embed_killed_at_three_points(ray_cluster, tmp_path):
    texts = tmp_path / "texts.txt"
    lines = [f"sentence {i} about {'cats dogs birds fish'.split()[i % 4]} and the weather today" for i in range(160)]
    texts.write_text("\n".join(lines) + "\n")
    cmd = lambda o: [str(VENV_BIN / "python"), "jobs/embed.py", "--set", "model.source=smollm2-135m",  # noqa: E731
                     "--set", "model.max_length=32", "--set", "rows_per_batch=8", "--input", str(texts),
                     "--output", str(o)]
    out, ref = tmp_path / "emb", tmp_path / "emb-ref"
    _through_three_kills(cmd, out, lambda o: bool(_parts(o / "embeddings")), tmp_path)
    _finish(cmd(ref), tmp_path / "ref.log")

    def vectors(o: Path) -> dict[str, list[float]]:
        table = pq.read_table(o / "embeddings")
        got = table.column("text").to_pylist()
        assert len(got) == len(set(got)) == len(lines), "each input exactly once"
        return dict(zip(got, table.column("embedding").to_pylist()))

    a, b = vectors(out), vectors(ref)
    assert set(a) == set(lines)
    for t in lines[::20]:
        assert a[t] == pytest.approx(b[t], abs=1e-5)
