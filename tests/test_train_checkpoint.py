"""Checkpoints cannot run code: safetensors weights, tensor-only optimizer state, JSON for the rest."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from synthembed.train import TrainConfig, run
from synthembed.train.loop import STATE_FILE, TENSORS_FILE, WEIGHTS_FILE
from train_helpers import toy_rows, write_examples


class _Payload:
    """What an attacker with write access to the storage path would plant: code run on unpickling."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_holding_a_pickle_payload_is_refused_on_resume(tmp_path):
    write_examples(tmp_path / "data.parquet", toy_rows(16))
    config = TrainConfig(model={"source": "tiny-llama", "max_length": 32}, data=[{"path": str(tmp_path / "data.parquet")}],
                         lora={"r": 4, "alpha": 8, "dropout": 0.0}, batch_size=4, epochs=2, warmup_steps=1,
                         backend="local", storage_path=str(tmp_path / "runs"), name="t", checkpoint_every=4)
    out = run(config)
    ckpt = sorted(out.glob("checkpoint_*"))[-1]
    assert (ckpt / WEIGHTS_FILE).read_bytes()[8:9] == b"{", "weights are safetensors (a JSON header)"
    assert json.loads((ckpt / STATE_FILE).read_text())["step"] == 8
    tensors = torch.load(ckpt / TENSORS_FILE, weights_only=True)
    marker = tmp_path / "pwned"
    tensors["rng"] = _Payload(str(marker))
    with open(ckpt / TENSORS_FILE, "wb") as f:
        pickle.dump(tensors, f)  # not even a torch zip: the old loader would have run it too
    (out / "manifest.json").unlink()  # resubmit: the run resumes from its latest checkpoint
    with pytest.raises(RuntimeError, match="holds more than tensors"):
        run(config)
    assert not marker.exists(), "the payload ran"


def test_a_same_task_run_trains_and_its_checkpoint_names_the_batch_order(tmp_path):
    from synthembed.train.config import DataSource
    from synthembed.train.data import data_fingerprint

    rows = toy_rows(16)
    for i, row in enumerate(rows):
        row["task_type"] = "sts" if i % 2 else "short_long"
    write_examples(tmp_path / "data.parquet", rows)
    config = TrainConfig(model={"source": "tiny-llama", "max_length": 32}, data=[{"path": str(tmp_path / "data.parquet")}],
                         lora={"r": 4, "alpha": 8, "dropout": 0.0}, batch_size=4, epochs=2, warmup_steps=1,
                         backend="local", storage_path=str(tmp_path / "runs"), name="t", checkpoint_every=4,
                         same_task_batches=True)
    out = run(config)
    state = json.loads((sorted(out.glob("checkpoint_*"))[-1] / STATE_FILE).read_text())
    assert state["step"] == 8
    sources = [DataSource(path=str(tmp_path / "data.parquet"))]
    # a checkpoint made in one batch order is not resumed in the other (the run folder's recipe fingerprint
    # already moves such a run aside; this guards a checkpoint handed to the loop directly)
    assert state["data_fingerprint"] == data_fingerprint(sources, 16, config.seed, True)
    assert state["data_fingerprint"] != data_fingerprint(sources, 16, config.seed, False)
