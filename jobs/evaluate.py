"""Ray job: score a model with mteb on hub tasks or local task folders; or compare finished runs.

    python jobs/evaluate.py --config configs/cpu-tiny.yaml [--set evaluate.model.source=runs/x/merged]
    python jobs/evaluate.py --compare runs/eval-base runs/eval-ft --out runs/compare \
        [--reference ../shared/data/REFERENCE_SCORES.md]
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/cpu-tiny.yaml

Prints the resolved config, stores it beside the outputs, and calls `synthembed.evaluate.run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from synthembed.config import ConfigError, add_config_args, dump_config, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="finished run folders to put side by side")
    parser.add_argument("--out", type=Path, help="with --compare: folder for report.md and chart.png")
    parser.add_argument("--reference", help="REFERENCE_SCORES.md to add as columns (overrides the config's)")
    parser.add_argument("--reference-model", action="append", dest="reference_models",
                        help="reference column to show (repeatable; default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "datasets", "sentence_transformers", "mteb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from synthembed.evaluate import EvaluateConfig, compare, run

    if args.compare:
        if args.out is None:
            parser.error("--compare needs --out FOLDER")
        report = compare(args.compare, args.out, args.reference, args.reference_models)
        print(report.read_text())
        return 0
    try:
        config = load_config(EvaluateConfig, args.config, args.overrides, section="evaluate" if args.config else None)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.reference:
        config.reference_scores = args.reference
    if args.reference_models:
        config.reference_models = args.reference_models
    print("# resolved evaluate config\n" + dump_config(config), flush=True)
    out = run(config)
    print((out / "report.md").read_text())
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
