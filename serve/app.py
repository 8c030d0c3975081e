"""Ray Serve application of the synthembed embedding service.

The deployment (FastAPI ingress + `@serve.batch` embedding) lives in the installed library,
`synthembed.serve.app`, so that replicas on any node and `synthembed.serve.deploy()` (called by the
pipeline after training) import the same code without this folder on their path. This file is the
command-line entry:

    python serve/app.py --config configs/cpu-tiny.yaml [--set serve.model.source=runs/demo/merged]
    serve run serve/config.yaml        # or: serve deploy serve/config.yaml (see the README)
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray 2.60 clusters use token auth by default

from synthembed.config import add_config_args, dump_config, load_config  # noqa: E402
from synthembed.serve import ServeConfig  # noqa: E402
from synthembed.serve.app import EmbeddingService, api, app_builder, build_app, deploy  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    parser = add_config_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--block", action="store_true", help="stay in the foreground until Ctrl-C")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(ServeConfig, args.config, args.overrides, section="serve")
    print(dump_config(config))
    url = deploy(config)
    print(f"serving {config.model_name} at {url}/v1/embeddings")
    while args.block:
        time.sleep(3600)


if __name__ == "__main__":
    main()
