"""Driver side: validate, launch the Ray Train TorchTrainer, export, write the manifest last."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from synthembed.config import dump_config
from synthembed.train.config import TrainConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def run_dir_of(config: TrainConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir).expanduser().resolve()
    if "://" in config.storage_path:
        raise ValueError("train.output_dir is required when train.storage_path is a remote URI (s3://, gs://)")
    return (Path(config.storage_path).expanduser() / config.name).resolve()


def build_trainer(config: TrainConfig):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from synthembed.train.loop import train_loop_per_worker

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
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources),
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
    from synthembed.train.data import mix_sources
    from synthembed.train.export import copy_adapter, export_merged
    from synthembed.train.loop import CURVE_FILE, STATE_FILE

    out = run_dir_of(config)
    if (out / MANIFEST).is_file():
        log.info("%s has a manifest: training already finished, skipping", out)
        return out
    # Fail on bad data before any Ray worker starts (they would all fail the same way, N times).
    n_examples = len(mix_sources(config.data, seed=config.seed))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))

    started = time.time()
    if config.backend == "local":
        import contextlib

        from synthembed.train.loop import LocalSession, train_loop_per_worker

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
        import torch

        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        curve_text = (ckpt / CURVE_FILE).read_text()
        adapter = copy_adapter(ckpt, out / "adapter")
    (out / "curve.jsonl").write_text(curve_text)
    curve = [json.loads(line) for line in curve_text.splitlines() if line]
    _plot(curve, out / "curve.png")
    merged = export_merged(config.model, adapter, out / "merged") if config.export_merged else None

    manifest = {
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
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks the run complete
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
