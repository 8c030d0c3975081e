"""Ray job: LoRA + InfoNCE fine-tuning.

    ray job submit -- python jobs/train.py --config configs/cpu-tiny.yaml --set train.max_steps=20
"""

from __future__ import annotations

import argparse
import logging

from synthembed.config import add_config_args, dump_config, load_config
from synthembed.train import TrainConfig, run


def main(argv: list[str] | None = None) -> None:
    parser = add_config_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(TrainConfig, args.config, args.overrides, section="train")
    print(dump_config(config), flush=True)
    out = run(config)  # stores the resolved config beside its outputs
    print(f"run folder: {out}", flush=True)


if __name__ == "__main__":
    main()
