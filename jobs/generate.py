"""Ray job: generate synthetic training data (the `generate:` section of a cluster profile).

    python jobs/generate.py --config configs/cpu-tiny.yaml [--set generate.num_examples=50 ...]
    ray job submit --working-dir . -- python jobs/generate.py --config configs/cpu-tiny.yaml

Prints the resolved config, stores it beside the outputs, and calls `synthembed.synth.run`. Re-running
the same command after a crash or kill resumes; a complete output folder (manifest.json) is skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # run from a checkout without install

from synthembed.config import ConfigError, add_config_args, dump_config, load_config  # noqa: E402
from synthembed.synth import GenerateConfig, run  # noqa: E402
from synthembed.synth.embedded import EngineFailed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = add_config_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(GenerateConfig, args.config, args.overrides, section="generate")
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    print("# resolved generate config\n" + dump_config(config), flush=True)
    try:
        out = run(config)
    except EngineFailed as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    print(f"generate: done -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
