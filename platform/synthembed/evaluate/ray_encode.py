"""Encode many texts on Ray Data: a pool of actors, each holding one copy of the model.

    texts --(sorted by length, so a batch pads little)--> ray.data.from_items
          --map_batches(_EncodeActor, concurrency=num_workers)--> (idx, vector) rows --> [n, dim] array

Each actor loads the encoder once from the same `EncoderSpec` the driver uses, so a vector computed on a
worker is the vector the driver would compute. Order is restored from the carried row index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from synthembed.evaluate.encoders import EncoderSpec, LoadedEncoder

log = logging.getLogger(__name__)


class _EncodeActor:
    def __init__(self, spec: EncoderSpec, instruction: str | None, threads: int):
        import torch

        # One actor per core: more intra-op threads than the actor's CPUs only oversubscribe.
        torch.set_num_threads(max(1, threads))
        self.encoder = LoadedEncoder(spec)
        self.instruction = instruction

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        emb = self.encoder.encode_raw(texts, self.instruction)
        return {"idx": batch["idx"], "emb": emb}


def ensure_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None and "RAY_ADDRESS" not in os.environ:
        log.info("starting a local Ray instance for encoding (set evaluate.ray.address to join a cluster)")
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)


def ray_encode(
    spec: EncoderSpec,
    texts: Sequence[str],
    instruction: str | None,
    num_workers: int = 2,
    batch_size: int = 64,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
) -> np.ndarray:
    """Un-normalised embeddings of `texts` computed by `num_workers` Ray actors."""
    import ray

    ensure_ray(address)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    items = [{"idx": int(i), "text": texts[i]} for i in order]
    # Enough blocks that every actor gets work from the start, few enough that per-block overhead is small.
    n_blocks = max(num_workers, min(len(items) // max(batch_size, 1), num_workers * 8)) or 1
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    out = ds.map_batches(
        _EncodeActor,
        fn_constructor_kwargs={"spec": spec, "instruction": instruction, "threads": int(max(1, cpus_per_worker))},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
    )
    result: np.ndarray | None = None
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        emb = np.asarray(batch["emb"], dtype=np.float32)
        if result is None:
            result = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        result[np.asarray(batch["idx"])] = emb
    if result is None:
        raise RuntimeError("Ray Data returned no embeddings")
    return result
