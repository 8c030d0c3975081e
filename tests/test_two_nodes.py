"""Two Ray nodes on one machine: the test head plus a second node joined with `ray start --address`.

- evaluation encoding (Ray Data actors) runs on both nodes and gives the local vectors;
- 2 training workers placed one per node (STRICT_SPREAD) give the loss and gradients of 1 worker on the
  concatenated batch;
- node loss: the second node's raylet and its workers are SIGKILLed (its process group) mid-training; Ray
  Train's worker group fails, waits for resources, and when a replacement node joins it resumes from the
  last checkpoint and finishes with the planned step count, its curve continuous across the failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before `import ray` (see test_train_ray.py)

import numpy as np
import pytest
import torch
import yaml

import train_helpers
from conftest import REPO, VENV_BIN, _ray_env
from train_helpers import loss_and_grads, toy_rows, write_examples

pytestmark = pytest.mark.slow


def _raylet_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith(b"/raylet"):
                pids.add(int(entry.name))
    return pids


class SecondNode:
    """A worker node started on this machine with its own CPUs; `kill()` is a hard node loss."""

    def __init__(self, num_cpus: int = 2):
        self.num_cpus = num_cpus
        self.raylet: int | None = None

    def start(self) -> "SecondNode":
        before = _raylet_pids()
        res = subprocess.run([str(VENV_BIN / "ray"), "start", "--address=127.0.0.1:6390", f"--num-cpus={self.num_cpus}",
                              "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                             env=_ray_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        deadline = time.time() + 30
        while not (new := _raylet_pids() - before):
            assert time.time() < deadline, "the second node's raylet did not appear"
            time.sleep(0.2)
        self.raylet = new.pop()
        return self

    def kill(self) -> None:
        """SIGKILL the raylet and every process it started (its workers), as a machine loss does.

        Its process group when the raylet has one of its own; otherwise the process tree (a group shared
        with this test process must never be signalled).
        """
        group = os.getpgid(self.raylet)
        if group == self.raylet and group != os.getpgid(0):
            os.killpg(group, signal.SIGKILL)
        for pid in [self.raylet, *_descendants(self.raylet)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"])


@pytest.fixture
def second_node(ray_cluster):
    node = SecondNode(num_cpus=4).start()  # as many CPUs as the head: a 3-CPU actor fits once on each
    deadline = time.time() + 30
    while _alive_nodes() < 2:
        assert time.time() < deadline
        time.sleep(0.5)
    yield node
    try:
        node.kill()
    except ProcessLookupError:
        pass


def _tiny_train(**kw) -> dict:
    return {"model": {"source": "tiny-llama", "max_length": 48}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "temperature": 0.05, "batch_size": 8, **kw}


def test_two_workers_on_two_nodes_equal_one_worker(second_node, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(train_helpers)
    rows = toy_rows(8, label_positives=True)
    train = _tiny_train()
    out = tmp_path / "two.pt"
    TorchTrainer(
        train_helpers.gather_test_loop,
        train_loop_config={"train": train, "rows": rows, "chunk_sizes": [None, 1], "out": str(out),
                           "nodes_out": str(tmp_path / "node")},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}, placement_strategy="STRICT_SPREAD"),
        run_config=RunConfig(name="two-nodes", storage_path=str(tmp_path / "ray")),
    ).fit()
    nodes = {(tmp_path / f"node.{r}").read_text() for r in (0, 1)}
    assert len(nodes) == 2, "the two workers ran on the same node"
    (one_loss, one_grads), = loss_and_grads(train, rows, [None])
    for loss, grads in torch.load(out):
        assert loss == pytest.approx(one_loss, abs=1e-5)
        for a, b in zip(one_grads, grads):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_node_loss_then_a_replacement_node_resumes_and_finishes(second_node, tmp_path):
    write_examples(tmp_path / "gen" / "examples" / "part-0.parquet", toy_rows(48))
    total = 40
    train = _tiny_train(data=[{"path": str(tmp_path / "gen")}], num_workers=2, epochs=100, max_steps=total,
                        placement_strategy="STRICT_SPREAD", resources_per_worker={"CPU": 1}, warmup_steps=2,
                        checkpoint_every=4, max_failures=5, collective_timeout_s=10,
                        storage_path=str(tmp_path / "runs"), name="node-loss")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"train": train}))
    env = {**_ray_env(), "RAY_ADDRESS": "127.0.0.1:6390", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120"}
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(cfg)],
                           cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    run_dir = tmp_path / "runs" / "node-loss"
    replacement = None
    try:
        deadline = time.time() + 300
        while len(list(run_dir.glob("checkpoint_*/lora_weights.safetensors"))) < 2:
            assert job.poll() is None and time.time() < deadline, (tmp_path / "job.log").read_text()[-4000:]
            time.sleep(0.05)
        second_node.kill()
        lost_at = time.time()
        while _alive_nodes() > 1 and time.time() < lost_at + 90:  # the GCS notices the dead node
            time.sleep(0.5)
        assert job.poll() is None, "the run gave up instead of waiting for a node"
        replacement = SecondNode(num_cpus=4).start()
        job.wait(timeout=600)
    finally:
        log.close()
        if job.poll() is None:
            job.kill()
        if replacement is not None:
            replacement.kill()
    out = (tmp_path / "job.log").read_text()
    assert job.returncode == 0, out[-5000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"] == total and manifest["restarts"] >= 1, out[-4000:]
    curve = [json.loads(x) for x in (run_dir / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(1, total + 1)), "a step lost or repeated across the failure"
    assert curve[0]["restarts"] == 0 and curve[-1]["restarts"] >= 1


def test_evaluation_encoding_spreads_over_both_nodes(second_node):
    from ray.util.state import list_actors

    from synthembed.evaluate.encoders import LoadedEncoder, make_spec
    from synthembed.evaluate.ray_encode import ray_encode
    from synthembed.model import ModelConfig

    spec = make_spec(ModelConfig(source="tiny-llama", max_length=32), "decoder")
    texts = [f"sentence number {i} about the weather" for i in range(64)]
    before = {a.actor_id for a in list_actors(limit=10_000)}
    got = ray_encode(spec, texts, None, num_workers=2, batch_size=8, cpus_per_worker=3)
    # 3 CPUs each: one actor fits on the head (4 CPUs), the other only on the second node
    actors = [a for a in list_actors(limit=10_000, detail=True)
              if a.actor_id not in before and "_EncodeActor" in (a.class_name or "")]
    assert len({a.node_id for a in actors}) == 2, [(a.class_name, a.node_id) for a in actors]
    want = LoadedEncoder(spec).encode_raw(texts, None)
    np.testing.assert_allclose(got, want, atol=1e-5)
