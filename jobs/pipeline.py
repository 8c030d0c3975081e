"""Ray job: the whole loop, generate -> train -> evaluate -> deploy, resumable stage by stage.

    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/cpu-tiny.yaml
    python jobs/pipeline.py --config configs/cpu-tiny.yaml --check     # validate only (no compute)

Resubmitting the same command after a failure skips every stage whose manifest exists and resumes the
one that was interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from synthembed.config import ConfigError, add_config_args, dump_config, enter_submit_dir, load_config
from synthembed.pipeline import PipelineConfig, format_summary, preflight, run
from synthembed.synth.embedded import EngineFailed


def main(argv: list[str] | None = None) -> None:
    parser = add_config_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--check", action="store_true", help="validate the config and inputs, then exit")
    args = parser.parse_args(argv)
    enter_submit_dir()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(PipelineConfig, args.config, args.overrides)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    problems = preflight(config)
    if problems:
        sys.exit("error: pipeline config:\n  " + "\n  ".join(problems))
    if args.check:
        print(f"config OK: stages {config.stages}, outputs under {config.output_root}")
        return
    print(dump_config(config), flush=True)
    try:
        summary = run(config)
    except EngineFailed as err:
        sys.exit(f"error: stage generate: {err}")
    print(format_summary(summary), flush=True)
    print(json.dumps({"endpoint": summary.get("endpoint"), "stage_seconds": summary.get("stage_seconds")}))


if __name__ == "__main__":
    main()
