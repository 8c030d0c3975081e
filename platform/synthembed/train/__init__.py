"""LoRA + InfoNCE contrastive fine-tuning on Ray Train (e5-mistral recipe).

`run(config)` trains on any number of Ray Train workers and returns the run folder:
adapter/ (peft), merged/ (plain Hugging Face folder), config.yaml, curve.jsonl, manifest.json (last).
"""

from synthembed.train.config import DataSource, LoraSettings, TrainConfig
from synthembed.train.loss import InfoNCELoss, duplicate_mask
from synthembed.train.run import run

__all__ = ["DataSource", "LoraSettings", "TrainConfig", "InfoNCELoss", "duplicate_mask", "run"]
