"""One contrastive step over the gathered batch: length-grouped forward passes, optionally GradCache.

Every text of the step (queries and documents together) is sorted by token length and embedded in
groups of similar length, so a forward pass pads little: with short and long texts mixed, padding
every text to the longest one of its column wastes most of the compute and activation memory
(measured on Banking77 pairs at max_length 64: 65% of the padded tokens). Padding does not change an
embedding (position ids come from the mask, see model/embedder.py), so grouping changes nothing but
the cost. No library does this for a contrastive step, hence the hand-written code.

With `chunk_size`, the groups are GradCache chunks (Gao et al. 2021), which make a contrastive batch
larger than memory exact:
  1. embed every chunk WITHOUT a graph (remembering each chunk's RNG state);
  2. compute the full-batch loss on those embeddings as leaves and backprop to get dL/de only;
  3. re-embed each chunk WITH a graph (same RNG state, so dropout masks repeat) and backprop
     dL/de of that chunk into the weights.
Peak activation memory is one chunk; the loss and the gradient equal the unchunked ones (up to float
rounding) because L depends on the weights only through the embeddings e.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from synthembed.train.data import ContrastiveBatch
from synthembed.train.distributed import gather_keep_local
from synthembed.train.loss import InfoNCELoss

EmbedFn = Callable[[Sequence[Sequence[int]]], torch.Tensor]  # token-id lists -> [n, dim] embeddings


class _RngState:
    """CPU (and current CUDA device) RNG state, to replay a forward pass with the same dropout."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def length_groups(ids: Sequence[Sequence[int]], size: int | None) -> list[list[int]]:
    """Indices of `ids`, longest first, cut into groups of at most `size` (None: one group)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
    size = size or len(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _in_input_order(parts: list[torch.Tensor], groups: list[list[int]]) -> torch.Tensor:
    """Concatenate per-group embeddings and put row i back at position i (differentiable)."""
    flat = torch.cat(parts)
    order = torch.tensor([i for g in groups for i in g], device=flat.device)
    return flat[torch.argsort(order)]


class ContrastiveStep:
    """Computes the global InfoNCE loss for one step and leaves this worker's gradient in the params.

    `micro_batch_size`: texts per forward pass without GradCache (all passes keep their graph);
    `chunk_size`: texts per GradCache chunk (one chunk's graph at a time). Call
    `distributed.all_reduce_grads` afterwards to sum the per-worker gradients.
    """

    def __init__(
        self,
        embed: EmbedFn,
        loss: InfoNCELoss,
        chunk_size: int | None = None,
        device=None,
        micro_batch_size: int | None = None,
    ):
        self.embed, self.loss_fn = embed, loss
        self.chunk_size, self.micro_batch_size = chunk_size, micro_batch_size
        self.device = torch.device(device or "cpu")

    def global_loss(self, q: torch.Tensor, d: torch.Tensor, batch: ContrastiveBatch) -> torch.Tensor:
        """Gather queries, positives and hard negatives from all workers; loss of the whole batch."""
        n = batch.n_queries
        queries = gather_keep_local(q)
        docs = torch.cat([gather_keep_local(d[:n]), gather_keep_local(d[n:])])
        pos_keys = gather_keep_local(batch.pos_keys.to(q.device))
        doc_keys = torch.cat([gather_keep_local(batch.doc_keys[:n].to(q.device)), gather_keep_local(batch.doc_keys[n:].to(q.device))])
        return self.loss_fn(queries, docs, pos_keys, doc_keys)

    def __call__(self, batch: ContrastiveBatch) -> float:
        texts = list(batch.query_ids) + list(batch.doc_ids)
        nq = batch.n_queries
        if self.chunk_size is None or self.chunk_size >= len(texts):
            groups = length_groups(texts, self.micro_batch_size)
            e = _in_input_order([self.embed([texts[i] for i in g]) for g in groups], groups)
            loss = self.global_loss(e[:nq], e[nq:], batch)
            loss.backward()
            return loss.item()

        # 1. embeddings without a graph, chunk by chunk
        groups = length_groups(texts, self.chunk_size)
        states, parts = [], []
        with torch.no_grad():
            for g in groups:
                states.append(_RngState(self.device))
                parts.append(self.embed([texts[i] for i in g]))
        e = _in_input_order(parts, groups).detach().requires_grad_()
        # 2. full-batch loss on cached embeddings -> dL/de
        loss = self.global_loss(e[:nq], e[nq:], batch)
        loss.backward()
        # 3. replay each chunk with a graph and push its slice of dL/de into the weights
        for g, state in zip(groups, states):
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                state.restore()
                out = self.embed([texts[i] for i in g])
                out.backward(e.grad[g].to(out.dtype))
        return loss.item()
