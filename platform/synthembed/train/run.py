"""Driver side: validate, launch the Ray Train TorchTrainer, export, write the manifest last."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path


from synthembed import stage
from synthembed.config import ConfigError, dump_config
from synthembed.train.config import TrainConfig
from synthembed.train.data import mix_sources
from synthembed.train.schedule import TrainPlan, plan_training
from synthembed.train.export import copy_adapter, export_merged
from synthembed.train.loop import CURVE_FILE, LocalSession, read_state, train_loop_per_worker

log = logging.getLogger(__name__)

# Fields that change where or how safely a run is kept, never what it learns: not in the fingerprint.
_NOT_FINGERPRINTED = {"name", "storage_path", "output_dir", "num_to_keep", "checkpoint_every", "max_failures",
                      "collective_timeout_s"}


def run_dir_of(config: TrainConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir).expanduser().resolve()
    if "://" in config.storage_path:
        raise ValueError("train.output_dir is required when train.storage_path is a remote URI (s3://, gs://)")
    return (Path(config.storage_path).expanduser() / config.name).resolve()


def stage_folder(config: TrainConfig) -> stage.StageFolder:
    """The run folder under a fingerprint of the recipe, the data's manifests and the base model."""
    recipe = {k: v for k, v in config.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    data = [stage.input_fingerprint(Path(d.path).expanduser()) for d in config.data]
    src = Path(config.model.source).expanduser()
    model = stage.input_fingerprint(src) if src.exists() else config.model.source
    return stage.StageFolder(run_dir_of(config), "train", stage.fingerprint(recipe, data, model))


def checked_plan(config: TrainConfig, n_examples: int, examples_from: str = "the mixed data") -> TrainPlan:
    """The plan, logged; its problems stop the run (ConfigError) unless train.allow_unusual_schedule."""
    plan = plan_training(config, n_examples, examples_from)
    log.info("%s", plan.describe())
    if plan.problems and not config.allow_unusual_schedule:
        raise ConfigError("train plan:\n  " + "\n  ".join(plan.problems)
                          + "\n  (set train.allow_unusual_schedule: true to run it anyway)")
    return plan


def build_trainer(config: TrainConfig):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = config.storage_path if "://" in config.storage_path else str(Path(config.storage_path).expanduser().resolve())
    resources = config.resources_per_worker
    if resources is None and not config.use_gpu:
        resources = {"CPU": config.torch_threads or 1}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(mode="json")},
        # when a worker dies mid-step, its peers sit in a collective; the timeout turns that into an
        # error so the worker group restarts from the latest checkpoint (default would be 30 min)
        torch_config=TorchConfig(timeout_s=config.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker=resources, placement_strategy=config.placement_strategy),
        run_config=RunConfig(
            name=config.name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.num_to_keep, checkpoint_score_attribute="step", checkpoint_score_order="max"
            ),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )


def run(config: TrainConfig) -> Path:
    """Train (or resume) and export. Returns the run folder with adapter/, merged/, config, curve, manifest."""
    folder = stage_folder(config)
    out = folder.path
    if folder.complete():
        log.info("%s: training with this recipe and data already finished, skipping", out)
        return out
    # Fail on bad data or a broken schedule before any Ray worker starts (they would all fail the same way).
    plan = checked_plan(config, len(mix_sources(config.data, seed=config.seed)))
    n_examples = plan.examples
    folder.begin(dump_config(config))  # a folder of another recipe or data is moved aside, not resumed
    stage.write_json(out / "plan.json", plan.model_dump())

    started = time.time()
    if config.backend == "local":
        storage = (Path(config.storage_path).expanduser() / config.name).resolve()
        session = LocalSession(storage, config.num_to_keep)
        train_loop_per_worker({"train": config.model_dump(mode="json")}, session)
        latest = session.checkpoints()[-1]
        checkpoint_path, checkpoint_dir = str(latest), contextlib.nullcontext(str(latest))
    else:
        result = build_trainer(config).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training under {out} reported no checkpoint; see the Ray Train logs")
        checkpoint_path, checkpoint_dir = result.checkpoint.path, result.checkpoint.as_directory()
    with checkpoint_dir as d:
        ckpt = Path(d)

        state = read_state(ckpt)
        curve_text = (ckpt / CURVE_FILE).read_text()
        adapter = copy_adapter(ckpt, out / "adapter")
    stage.write_text(out / "curve.jsonl", curve_text)
    curve = [json.loads(line) for line in curve_text.splitlines() if line]
    _plot(curve, out / "curve.png")
    merged = export_merged(config.model, adapter, out / "merged") if config.export_merged else None

    manifest = folder.finish({
        "steps": state["step"],
        "total_steps": state["total_steps"],
        "restarts": state.get("restarts", 0),
        "examples": n_examples,
        "examples_seen": state["step"] * config.batch_size,
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "median_examples_per_s": sorted(r["examples_per_s"] for r in curve)[len(curve) // 2] if curve else None,
        "wall_seconds": round(time.time() - started, 1),
        "checkpoint": checkpoint_path,
        "backend": config.backend,
        "adapter": str(adapter),
        "merged": str(merged) if merged else None,
        "base_model": config.model.source,
        "num_workers": config.num_workers,
    })
    log.info("training finished: %s", json.dumps(manifest))
    return out


def _plot(curve: list[dict], path: Path) -> None:
    if not curve:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in curve], [r["loss"] for r in curve])
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
