"""Ray Train: gathered negatives across workers, kill-and-resume, and a real-model run with export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Ray reads RAY_AUTH_MODE when it is first imported; the ray_cluster fixture sets it only after its own
# `import ray`, so a client in this process would connect without a token. Set it before any import.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import pytest
import torch

import train_helpers
from train_helpers import loss_and_grads, toy_rows, write_examples

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _tiny_train(**kw) -> dict:
    base = dict(
        model={"source": "tiny-llama", "max_length": 48},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        temperature=0.05,
        batch_size=8,
    )
    base.update(kw)
    return base


def test_two_workers_with_gathered_negatives_equal_one_worker(ray_cluster, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(train_helpers)  # workers cannot import tests/
    # duplicates across the two workers' halves (rows 0 and 12 share a positive) exercise masking
    rows = toy_rows(8, label_positives=True)
    rows[5]["positive"] = rows[1]["positive"]
    train = _tiny_train()
    out = tmp_path / "two.pt"
    TorchTrainer(
        train_helpers.gather_test_loop,
        train_loop_config={"train": train, "rows": rows, "chunk_sizes": [None, 1], "out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="gather-test", storage_path=str(tmp_path / "ray")),
    ).fit()
    two = torch.load(out)
    (one_loss, one_grads), = loss_and_grads(train, rows, [None])
    assert sum(g.abs().sum().item() for g in one_grads) > 0
    for loss, grads in two:  # unchunked and GradCache chunk 1, both on 2 workers
        assert loss == pytest.approx(one_loss, abs=1e-5)
        for a, b in zip(one_grads, grads):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # a worker that only saw its own half (no gathering) would get a different loss
    (half_loss, _), = loss_and_grads(train, rows[:4], [None])
    assert abs(half_loss - one_loss) > 1e-3


def _write_config(path: Path, train: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"generate": {}, "train": train, "evaluate": {}, "serve": {}}))
    return path


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


def test_killed_worker_resumes_from_checkpoint_via_ray_job(ray_cluster, tmp_path):
    data = write_examples(tmp_path / "gen" / "examples" / "part-0.parquet", toy_rows(48))
    total = 40  # tiny-llama steps take 25-500 ms (idle vs busy machine): time to kill mid-run
    train = _tiny_train(
        data=[{"path": str(tmp_path / "gen")}], num_workers=2, batch_size=8, epochs=100, max_steps=total,
        checkpoint_every=5, max_failures=2, collective_timeout_s=15, storage_path=str(tmp_path / "runs"), name="kill-test", warmup_steps=2,
    )
    cfg = _write_config(tmp_path / "cfg.yaml", train)
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    log = open(tmp_path / "job.log", "w")  # a file, not a pipe: Ray Train logs a lot
    job = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_cluster, "--",
         sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(cfg)],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    run_dir = tmp_path / "runs" / "kill-test"
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and job.poll() is None:
        # a second checkpoint folder means the first one is committed (a folder appears when its
        # upload starts; a kill before the commit would correctly restart from scratch)
        if len(list(run_dir.glob("checkpoint_*"))) >= 2:
            pids = _train_worker_pids()
            if pids:
                killed = pids[-1]
                os.kill(killed, 9)  # a real worker process death, not an exception in the loop
                break
        time.sleep(0.05)
    try:
        job.wait(timeout=420)
    finally:
        log.close()
    out = (tmp_path / "job.log").read_text()
    assert killed is not None, f"no worker to kill before the job ended:\n{out[-3000:]}"
    assert job.returncode == 0, out[-5000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"] == total
    assert manifest["restarts"] >= 1, f"the run finished without a restart (killed pid {killed}):\n{out[-4000:]}"
    curve = [json.loads(line) for line in (run_dir / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(1, total + 1))  # no step lost or repeated
    assert curve[0]["restarts"] == 0 and curve[-1]["restarts"] >= 1  # later steps ran in the new worker group
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "config.yaml").is_file()


def test_real_model_few_steps_lower_loss_and_export_merged(ray_cluster, tmp_path):
    import numpy as np

    from synthembed.model import Embedder
    from synthembed.train import TrainConfig, run

    write_examples(tmp_path / "data.parquet", toy_rows(8))
    config = TrainConfig(
        model={"source": "smollm2-135m", "max_length": 32},
        data=[{"path": str(tmp_path / "data.parquet")}],
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        batch_size=4, epochs=3, lr=1e-3, warmup_steps=0, weight_decay=0.0, torch_threads=2,
        storage_path=str(tmp_path / "runs"), name="real", checkpoint_every=100,
    )
    out = run(config)
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert len(curve) == 6
    first, last = np.mean([r["loss"] for r in curve[:2]]), np.mean([r["loss"] for r in curve[-2:]])
    assert last < first, f"loss did not go down: {[round(r['loss'], 3) for r in curve]}"

    texts = ["Cats are small domestic felines that purr.", "Trains run on steel rails between stations."]
    merged = Embedder.load(str(out / "merged"), max_length=32).encode(texts)
    with_adapter = Embedder.load("smollm2-135m", adapter=str(out / "adapter"), max_length=32).encode(texts)
    base = Embedder.load("smollm2-135m", max_length=32).encode(texts)
    np.testing.assert_allclose(merged, with_adapter, atol=1e-4)
    assert np.abs(merged - base).max() > 1e-3  # training changed the model

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out / "merged"), device="cpu").encode(texts)
    np.testing.assert_allclose(st, merged, atol=1e-4)


def test_real_model_compiled_training_under_ray_train(ray_cluster, tmp_path):
    """train.compile on a real model in a Ray Train worker (precision auto: bf16 on a bf16 CPU): the first
    loss is the eager run's (bf16 rounds fused kernels differently, hence 3%), the loss goes down, and the
    adapter it saves (parameter names as eager's) loads into an Embedder and moves its vectors."""
    import numpy as np

    from synthembed.model import Embedder
    from synthembed.train import TrainConfig, run

    write_examples(tmp_path / "data.parquet", toy_rows(8))
    curves, outs = {}, {}
    for compile in (False, True):
        config = TrainConfig(
            model={"source": "smollm2-135m", "max_length": 32},
            data=[{"path": str(tmp_path / "data.parquet")}],
            lora={"r": 8, "alpha": 16, "dropout": 0.0},
            batch_size=4, epochs=3, lr=1e-3, warmup_steps=0, weight_decay=0.0, torch_threads=2,
            storage_path=str(tmp_path / "runs"), name=f"compile-{compile}", checkpoint_every=100,
            export_merged=False, compile=compile,
        )
        outs[compile] = run(config)
        curves[compile] = [json.loads(line)["loss"] for line in (outs[compile] / "curve.jsonl").read_text().splitlines()]
    assert len(curves[True]) == 6
    assert curves[True][0] == pytest.approx(curves[False][0], rel=3e-2)
    assert np.mean(curves[True][-2:]) < np.mean(curves[True][:2]), curves[True]
    texts = ["Cats are small domestic felines that purr.", "Trains run on steel rails between stations."]
    tuned = Embedder.load("smollm2-135m", adapter=str(outs[True] / "adapter"), max_length=32, dtype="float32")
    base = Embedder.load("smollm2-135m", max_length=32, dtype="float32")
    assert np.abs(tuned.encode(texts) - base.encode(texts)).max() > 1e-3  # the compiled run trained the adapter
