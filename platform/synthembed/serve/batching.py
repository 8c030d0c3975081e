"""Token-budget batching across requests, and the post-processing of pooled vectors.

A forward pass costs (items x longest item) tokens once padded (`synthembed.model.batches.padded_tokens`).
`IdleBatcher` closes a batch before its padded size would pass the budget, and forms it only when the model
is free: whatever queued while the previous pass ran goes into the next one. A client's large list is
submitted item by item, so it is split over as many batches as the budget needs and shares them with other
clients' items.

Why not `@serve.batch`: Ray Serve's batch loop forms the next batch as soon as its wait timeout expires
and only then waits for the running one (`max_concurrent_batches`), so under load it cuts the queue into
wait-timeout slices. Measured on 2 cores (smollm2-135m, 32 clients, ~256-token inputs): batches of 1-7
inputs with ~25 requests waiting behind them, the model running small batches back to back
(bench/results/serve_batcher.json compares the two).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from synthembed.model.batches import padded_tokens


def postprocess(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka cut then L2 normalisation: e = v[:d] / ||v[:d]|| (the cut is re-normalised, as in TEI)."""
    out = np.asarray(vectors, dtype=np.float32)
    if dimensions is not None:
        out = out[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out.astype(np.float32, copy=False)


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


@dataclass
class _Item:
    ids: Sequence[int]
    future: asyncio.Future


@dataclass
class IdleBatcher:
    """Queue token sequences from many requests; one worker runs them in token-budget batches.

    `run(batch)` is the forward pass and returns one vector per sequence. It runs on one thread of its own,
    one batch at a time, so the event loop goes on reading requests meanwhile, and every pass is computed
    by the same OpenMP thread team: libgomp gives each new calling thread a team of its own, and
    `asyncio.to_thread`'s pool handed passes to several threads whose idle teams spun on the 2 cores the
    proxy needs (bench/results/serve_forward_thread*.json, fp32: short inputs at c=32 and c=1 gained in
    both runs; long inputs at c=32 within spread).
    A batch takes queued sequences first in, first out, while `padded_tokens` stays within
    `max_batch_tokens` (always at least one). When the model is idle and a first sequence arrives, the
    batch waits up to `wait_s` for company; when sequences queued during the previous pass, it starts
    at once. A cancelled request's sequences are dropped before they cost a forward pass. `on_batch(items,
    tokens, seconds, queued)` is told about every pass (metrics; `queued`: sequences left waiting when it
    started)."""

    run: Callable[[list[Sequence[int]]], np.ndarray]
    max_batch_tokens: int
    wait_s: float = 0.005
    on_batch: Callable[[int, int, float, int], None] | None = None
    _queue: deque = field(default_factory=deque, init=False)
    _arrived: asyncio.Event | None = field(default=None, init=False)
    _worker: asyncio.Task | None = field(default=None, init=False)
    _thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward"), init=False)

    async def embed(self, ids: Sequence[int]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._work())
        item = _Item(ids, loop.create_future())
        self._queue.append(item)
        self._arrived.set()
        return await item.future

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue:
            item = self._queue[0]
            if item.future.cancelled():
                self._queue.popleft()
                continue
            if batch and padded_tokens([x.ids for x in batch] + [item.ids]) > self.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                if self.wait_s > 0:  # idle until now: give a burst of requests a moment to arrive together
                    await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not batch:
                continue
            ids = [x.ids for x in batch]
            queued = len(self._queue)
            start = time.perf_counter()
            try:
                vectors = await asyncio.get_running_loop().run_in_executor(self._thread, self.run, ids)
            except Exception as err:  # the requests of this batch fail; the worker serves the next one
                for x in batch:
                    if not x.future.done():
                        x.future.set_exception(err)
                continue
            for x, v in zip(batch, vectors):
                if not x.future.done():
                    x.future.set_result(v)
            if self.on_batch is not None:
                self.on_batch(len(batch), padded_tokens(ids), time.perf_counter() - start, queued)
