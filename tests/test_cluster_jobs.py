"""A real local Ray head: the dashboard answers on 127.0.0.1 behind token auth, and a job submitted with
the `ray job submit` CLI runs to SUCCEEDED and writes what it should."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO, VENV_BIN




def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_dashboard_is_on_loopback_and_requires_the_token(ray_cluster):
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    assert ray_cluster.startswith("http://127.0.0.1:")
    assert _get(ray_cluster + "/api/version") == 401
    assert _get(ray_cluster + "/api/version", token) == 200


@pytest.mark.slow
def test_embed_job_submitted_with_the_cli_succeeds(ray_cluster, tmp_path, tiny_embedder):
    texts = ["first text", "a second, longer text to embed", "third"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "cfg.yaml").write_text("embed:\n  model:\n    source: tiny-llama\n  rows_per_batch: 2\n")
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", ray_cluster, "--working-dir", str(REPO),
         "--submission-id", f"test-embed-{os.getpid()}", "--",
         "python", "jobs/embed.py", "--config", str(tmp_path / "cfg.yaml"),
         "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster)
    assert client.get_job_status(f"test-embed-{os.getpid()}") == JobStatus.SUCCEEDED

    table = pq.read_table(tmp_path / "out" / "embeddings")
    rows = {t: np.asarray(e, dtype=np.float32) for t, e in zip(table["text"].to_pylist(), table["embedding"].to_pylist())}
    assert sorted(rows) == sorted(texts)
    expected = tiny_embedder.encode(texts)
    for text, vec in zip(texts, expected):
        assert np.abs(rows[text] - vec).max() < 1e-5
    assert (tmp_path / "out" / "config.yaml").exists()


def test_job_with_a_bad_config_fails_before_any_work(tmp_path):
    (tmp_path / "cfg.yaml").write_text("embed:\n  model:\n    source: tiny-llama\n  rows_per_bach: 2\n")
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "jobs/embed.py", "--config", str(tmp_path / "cfg.yaml"),
         "--input", str(tmp_path / "none.txt"), "--output", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "rows_per_bach: unknown key" in proc.stderr and "rows_per_batch" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
