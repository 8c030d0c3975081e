"""The one job entry point: `python -m synthembed <stage> --config C [--set key=value ...]`.

    python -m synthembed generate --config configs/cpu-tiny.yaml
    python -m synthembed train    --config configs/cpu-tiny.yaml --set train.max_steps=50
    python -m synthembed evaluate --config configs/cpu-tiny.yaml   |  evaluate --compare A B --out DIR
    python -m synthembed embed    --config configs/cpu-tiny.yaml --input texts.txt --output DIR [--instruction I]
    python -m synthembed pipeline --config configs/cpu-tiny.yaml [--check]
    python -m synthembed serve    --config configs/cpu-tiny.yaml --set serve.model.source=runs/cpu-tiny/merged

`jobs/<stage>.py` are thin wrappers around this, so `ray job submit -- python jobs/train.py ...` works.
What every stage gets here, once:

- relative paths mean what they meant in the submitting shell (`enter_submit_dir`);
- one log format;
- exit codes: 0 done; 2 a bad config (the message names the key and what is allowed, no traceback);
  3 the stage stopped for a cause it could name (an engine that keeps dying, a missing input or task data),
  with that message and no traceback; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from synthembed.config import ConfigError, add_config_args, dump_config, enter_submit_dir, load_config
from synthembed.errors import StageError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_CONFIG, EXIT_STAGE = 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synthembed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in ("generate", "train", "evaluate", "embed", "pipeline", "serve"):
        add_config_args(sub.add_parser(name))
    sub.choices["evaluate"].add_argument("--compare", nargs="+", metavar="RUN_DIR",
                                         help="finished run folders to put side by side")
    sub.choices["evaluate"].add_argument("--out", type=Path, help="with --compare: folder for report.md and chart.png")
    sub.choices["evaluate"].add_argument("--reference", help="REFERENCE_SCORES.md to add as columns")
    sub.choices["evaluate"].add_argument("--reference-model", action="append", dest="reference_models",
                                         help="reference column to show (repeatable; default all)")
    sub.choices["embed"].add_argument("--input", type=Path, required=True)
    sub.choices["embed"].add_argument("--output", type=Path, required=True)
    sub.choices["embed"].add_argument("--instruction", default=None,
                                      help="embed the texts as queries with this instruction")
    for name in ("train", "pipeline"):
        sub.choices[name].add_argument("--check", action="store_true",
                                       help="validate the config and inputs, print the training plan, then exit")
    return parser


def _load(cls, args, section: str | None):
    return load_config(cls, args.config, args.overrides, section=section if args.config else None)


# Each command imports only its own stage, inside its function: a generate job never loads torch.
def _generate(args) -> None:
    from synthembed.synth import GenerateConfig, run

    config = _load(GenerateConfig, args, "generate")
    print("# resolved generate config\n" + dump_config(config), flush=True)
    print(f"generate: done -> {run(config)}", flush=True)


def _train(args) -> None:
    from synthembed.train import TrainConfig, run
    from synthembed.train.data import mix_sources
    from synthembed.train.run import checked_plan

    config = _load(TrainConfig, args, "train")
    if args.check:
        try:
            n = len(mix_sources(config.data, seed=config.seed))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        print(checked_plan(config, n).describe())
        print("config OK")
        return
    print("# resolved train config\n" + dump_config(config), flush=True)
    print(f"run folder: {run(config)}", flush=True)


def _evaluate(args) -> None:
    from synthembed.evaluate import EvaluateConfig, compare, run

    for noisy in ("httpx", "datasets", "sentence_transformers", "mteb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.compare:
        if args.out is None:
            raise ConfigError("evaluate --compare needs --out FOLDER")
        print(compare(args.compare, args.out, args.reference, args.reference_models).read_text())
        return
    config = _load(EvaluateConfig, args, "evaluate")
    if args.reference:
        config.reference_scores = args.reference
    if args.reference_models:
        config.reference_models = args.reference_models
    print("# resolved evaluate config\n" + dump_config(config), flush=True)
    out = run(config)
    print((out / "report.md").read_text())
    print(f"run folder: {out}")


def _embed(args) -> None:
    from synthembed.embed import EmbedConfig, run

    config = _load(EmbedConfig, args, "embed")
    print("# resolved embed config\n" + dump_config(config), flush=True)
    print(f"embeddings written to {run(config, args.input, args.output, args.instruction)}")


def _pipeline(args) -> None:
    from synthembed.workflow import PipelineConfig, format_summary, preflight, run, train_plan

    config = load_config(PipelineConfig, args.config, args.overrides)
    problems = preflight(config)
    if problems:
        raise ConfigError("pipeline config:\n  " + "\n  ".join(problems))
    if args.check:
        print(train_plan(config).describe())
        print(f"config OK: stages {config.stages}, outputs under {config.output_root}")
        return
    print(dump_config(config), flush=True)
    summary = run(config)
    print(format_summary(summary), flush=True)
    print(json.dumps({"endpoint": summary.get("endpoint"), "stage_seconds": summary.get("stage_seconds")}))


def _serve(args) -> None:
    from synthembed.serve import ServeConfig, deploy

    config = _load(ServeConfig, args, "serve")
    print("# resolved serve config\n" + dump_config(config), flush=True)
    # The deployment outlives this job: Serve keeps it running until `serve shutdown` or a redeploy.
    print(f"serving {config.model_name} ({config.backend}) at {deploy(config)}/v1/embeddings", flush=True)


STAGES = {"generate": _generate, "train": _train, "evaluate": _evaluate, "embed": _embed, "pipeline": _pipeline,
          "serve": _serve}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    enter_submit_dir()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        STAGES[args.stage](args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except (StageError, FileNotFoundError) as err:
        print(f"error: {args.stage}: {err}", file=sys.stderr, flush=True)
        return EXIT_STAGE
    return 0
