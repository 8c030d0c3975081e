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
