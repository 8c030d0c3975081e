"""The Ray Train worker loop: resume, step, report, checkpoint.

A checkpoint holds everything a restarted worker group needs to continue as if nothing happened:
the LoRA weights, AdamW and scheduler state, the step (= data position, see data.BatchPlan), the
training curve so far, and a fingerprint of the data. Rank 0 writes it; every rank calls
`ray.train.report` (a barrier) each step.

Nothing in a checkpoint can run code when it is loaded (whoever can write the shared storage path would
otherwise run code on every worker): the LoRA weights are safetensors, the optimizer state and RNG are
tensors loaded with `torch.load(weights_only=True)`, everything else is JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from synthembed.train.config import TrainConfig
from synthembed.train.data import BatchPlan, ContrastiveCollator, data_fingerprint, mix_sources
from synthembed.train.distributed import all_reduce_grads, world
from synthembed.train.gradcache import ContrastiveStep
from synthembed.train.loss import InfoNCELoss
from synthembed.train.lora import autocast_dtype, build_lora_embedder, make_embed_fn, trainable_parameters
from synthembed.train.schedule import make_scheduler, warmup_of

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"  # step, scheduler, restarts, data fingerprint
TENSORS_FILE = "optimizer.pt"  # AdamW state and the RNG state: tensors only
WEIGHTS_FILE = "lora_weights.safetensors"
CURVE_FILE = "curve.jsonl"
ADAPTER_DIR = "adapter"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_checkpoint(directory: Path, model, optimizer, scheduler, step: int, curve: list[dict], extra: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(directory / WEIGHTS_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, directory / TENSORS_FILE)
    state = {"scheduler": scheduler.state_dict(), "step": step, **extra}
    (directory / STATE_FILE).write_text(json.dumps(state))
    (directory / CURVE_FILE).write_text("".join(json.dumps(r) + "\n" for r in curve))
    model.save_pretrained(directory / ADAPTER_DIR)  # a plain peft folder: exportable as-is


def read_state(directory: Path) -> dict:
    return json.loads((directory / STATE_FILE).read_text())


def load_checkpoint(directory: Path, model, optimizer, scheduler) -> tuple[dict, list[dict]]:
    """Restore weights, optimizer, scheduler and RNG; returns the JSON state and the curve so far."""
    from safetensors.torch import load_file

    weights = load_file(str(directory / WEIGHTS_FILE))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise RuntimeError(f"checkpoint {directory} lacks {len(missing)} LoRA tensors (e.g. {missing[0]}); was the LoRA config changed?")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    try:  # tensors and plain containers only: a pickled object in this file is refused, never run
        tensors = torch.load(directory / TENSORS_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"checkpoint {directory / TENSORS_FILE} holds more than tensors (refused, not "
                           f"loaded): {str(err).splitlines()[0]}; delete that checkpoint folder if you did not "
                           "write it") from None
    optimizer.load_state_dict(tensors["optimizer"])
    state = read_state(directory)
    state["rng"] = tensors["rng"]
    scheduler.load_state_dict(state["scheduler"])
    curve = [json.loads(line) for line in (directory / CURVE_FILE).read_text().splitlines() if line]
    return state, curve


class RaySession:
    """The four things the loop needs from Ray Train."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        self._train = ray.train
        self.world_size = ray.train.get_context().get_world_size()
        self.device = ray.train.torch.get_device()

    def latest_checkpoint(self):
        ckpt = self._train.get_checkpoint()
        return ckpt.as_directory() if ckpt is not None else None

    def report(self, metrics: dict, checkpoint_dir: Path | None, name: str) -> None:
        ckpt = self._train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name or None)


class LocalSession:
    """Single process, no Ray: same loop, checkpoints copied to `storage` (debugging, benchmarks)."""

    def __init__(self, storage: Path, num_to_keep: int = 2):
        self.storage, self.num_to_keep = storage, num_to_keep
        self.world_size = 1
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.storage.glob("checkpoint_*") if (p / STATE_FILE).is_file())

    def latest_checkpoint(self):
        found = self.checkpoints()
        return contextlib.nullcontext(str(found[-1])) if found else None

    def report(self, metrics: dict, checkpoint_dir: Path | None, name: str) -> None:
        if checkpoint_dir is None:
            return
        tmp = self.storage / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        tmp.rename(self.storage / name)
        for old in self.checkpoints()[: -self.num_to_keep]:
            shutil.rmtree(old, ignore_errors=True)


def train_loop_per_worker(loop_config: dict, session=None) -> None:
    """Runs on every Ray Train worker (or in-process with a LocalSession). `loop_config["train"]` is a TrainConfig dump."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = TrainConfig.model_validate(loop_config["train"])
    session = session or RaySession()
    rank, world_size = world()
    if world_size != session.world_size:
        raise RuntimeError(f"process group has {world_size} ranks but Ray Train has {session.world_size} workers")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = session.device
    torch.manual_seed(config.seed)  # identical LoRA init on every worker (also re-set on restart)

    embedder = build_lora_embedder(config, device)
    model = embedder.model
    params = trainable_parameters(model)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )
    examples = mix_sources(config.data, seed=config.seed)
    plan = BatchPlan(len(examples), config.batch_size, config.epochs, config.seed, config.max_steps,
                     groups=examples.task_type if config.same_task_batches else None)
    scheduler = make_scheduler(optimizer, warmup_of(config, plan.total_steps), plan.total_steps)
    fingerprint = data_fingerprint(config.data, len(examples), config.seed, config.same_task_batches)

    start, curve, restarts = 0, [], 0
    checkpoint = session.latest_checkpoint()
    if checkpoint is not None:
        with checkpoint as d:
            state, curve = load_checkpoint(Path(d), model, optimizer, scheduler)
        if state.get("data_fingerprint") != fingerprint:
            raise RuntimeError(
                "the latest checkpoint was made with different training data or seed; use a new train.name "
                "for a new run (same storage_path + name means resume)"
            )
        start, restarts = state["step"], state.get("restarts", 0) + 1
        torch.set_rng_state(state["rng"])
        log.info("rank %d resumed from checkpoint at step %d (restart %d)", rank, start, restarts)

    collate = ContrastiveCollator(embedder, config.model.max_length, config.hard_negatives)
    step_fn = ContrastiveStep(
        make_embed_fn(embedder, autocast_dtype(config, device)),
        InfoNCELoss(config.temperature, config.mask_duplicates, config.false_negative_margin),
        config.chunk_size,
        device,
        config.micro_batch_size,
    )
    for step in range(start, plan.total_steps):
        t0 = time.perf_counter()
        batch = collate(examples.take(plan.indices(step, rank, world_size)))
        loss = step_fn(batch)
        all_reduce_grads(params)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        done = step + 1
        metrics = {
            "step": done,
            "loss": loss,
            "lr": lr,
            "epoch": plan.epoch_of(done),
            "examples_per_s": config.batch_size / seconds,
            "step_seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
            "restarts": restarts,
        }
        if device.type == "cuda":
            metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        curve.append(metrics)
        if done % config.checkpoint_every == 0 or done == plan.total_steps:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    extra = {"data_fingerprint": fingerprint, "restarts": restarts, "total_steps": plan.total_steps}
                    save_checkpoint(Path(tmp), model, optimizer, scheduler, done, curve, extra)
                    ckpt = Path(tmp)
                session.report(metrics, ckpt, f"checkpoint_{done:07d}")
        else:
            session.report(metrics, None, "")
        if rank == 0:
            log.info("step %d/%d loss %.4f lr %.2e %.2f ex/s", done, plan.total_steps, loss, lr, metrics["examples_per_s"])
