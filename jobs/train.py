"""Ray job: LoRA + InfoNCE fine-tuning on Ray Train (the `train:` section).

    ray job submit --working-dir . -- python jobs/train.py --config configs/cpu-tiny.yaml [--set key=value ...]

A wrapper of `python -m synthembed train` (synthembed/cli.py: paths, logging, errors and exit codes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # a checkout without an install

from synthembed.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
