"""Quality run: fine-tune the embedded Gemma 3 270M with LoRA + InfoNCE and score base vs tuned.

    flock /tmp/synthembed-ray.lock .venv/bin/python bench/quality.py train   # ~15 min on 2 busy cores
    flock /tmp/synthembed-bench.lock .venv/bin/python bench/quality.py eval    # base vs tuned

Training data: bench/quality_data.py (Banking77 train pairs/labels + 6 GPT-4o retrieval triplets); no
evaluation test set is trained on. Training runs on Ray Train (1 worker, 2 threads) in a private local
Ray instance, under the machine-wide Ray lock: the test fixture's `ray stop --force` would otherwise
kill it (it did, once).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
RUNS = REPO / "runs"
RUN_NAME = "quality-gemma3-270m"


def train_config():
    from synthembed.train import TrainConfig

    data = RUNS / "quality-data"
    return TrainConfig(
        model={"source": "gemma3-270m", "max_length": 48},
        data=[
            {"path": str(data / "banking77-pairs"), "ratio": 0.25},
            {"path": str(data / "banking77-labels"), "ratio": 0.1},
            {"path": str(data / "gpt4o-retrieval"), "ratio": 5},
        ],
        lora={"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": "all-linear"},
        batch_size=16, max_steps=int(os.environ.get("QUALITY_STEPS", 40)), lr=3e-4, warmup_steps=4,
        weight_decay=0.1, torch_threads=2, num_workers=1, checkpoint_every=10,
        storage_path=str(RUNS), name=RUN_NAME,
    )


def train() -> Path:
    import ray

    from quality_data import build
    from synthembed.train import run

    if not (RUNS / "quality-data" / "banking77-pairs").is_dir():
        print(build(RUNS / "quality-data"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir="/tmp/synthembed-ray-quality")
    return run(train_config())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cmd = sys.argv[1] if len(sys.argv) > 1 else "train"
    if cmd == "train":
        print(train())
    else:
        raise SystemExit(f"unknown command {cmd!r}: train | eval")
