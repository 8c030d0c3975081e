"""Embed a file of texts with any model the project can load, on Ray Data.

    python jobs/embed.py --config configs/cpu-tiny.yaml --input texts.txt --output out/embeddings
        [--instruction "Retrieve semantically similar text."] [--set embed.model.source=smollm2-135m]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from synthembed.config import add_config_args, dump_config, enter_submit_dir, load_job_config
from synthembed.embed import EmbedConfig, run


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = add_config_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--instruction", default=None, help="embed the texts as queries with this instruction")
    args = parser.parse_args()
    enter_submit_dir()
    config = load_job_config(EmbedConfig, args, section="embed")
    print(dump_config(config))
    out = run(config, args.input, args.output, args.instruction)
    print(f"embeddings written to {out}")


if __name__ == "__main__":
    main()
