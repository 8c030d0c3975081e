"""One contrastive step over the gathered batch, optionally GradCache-chunked.

GradCache (Gao et al. 2021) makes a contrastive batch larger than memory exact:
  1. embed all texts chunk by chunk WITHOUT a graph (remembering each chunk's RNG state);
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


def _chunks(n: int, size: int | None) -> list[slice]:
    size = size or n
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class ContrastiveStep:
    """Computes the global InfoNCE loss for one step and leaves this worker's gradient in the params.

    Call `distributed.all_reduce_grads` afterwards to sum the per-worker gradients.
    """

    def __init__(self, embed: EmbedFn, loss: InfoNCELoss, chunk_size: int | None = None, device=None):
        self.embed, self.loss_fn, self.chunk_size = embed, loss, chunk_size
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
        if self.chunk_size is None or self.chunk_size >= max(nq, len(batch.doc_ids)):
            q = self.embed(batch.query_ids)
            d = self.embed(batch.doc_ids)
            loss = self.global_loss(q, d, batch)
            loss.backward()
            return loss.item()

        # 1. embeddings without a graph, chunk by chunk (queries and documents chunked separately:
        #    they differ in length, and padding a short query to a long document wastes compute)
        spans = [(0, s) for s in _chunks(nq, self.chunk_size)] + [(nq, s) for s in _chunks(len(batch.doc_ids), self.chunk_size)]
        states, outs = [], []
        with torch.no_grad():
            for base, s in spans:
                states.append(_RngState(self.device))
                outs.append(self.embed(texts[base + s.start : base + s.stop]))
        nqc = len(_chunks(nq, self.chunk_size))
        q = torch.cat(outs[:nqc]).detach().requires_grad_()
        d = torch.cat(outs[nqc:]).detach().requires_grad_()
        # 2. full-batch loss on cached embeddings -> dL/de
        loss = self.global_loss(q, d, batch)
        loss.backward()
        grads = list(q.grad.split([s.stop - s.start for _, s in spans[:nqc]])) + list(
            d.grad.split([s.stop - s.start for _, s in spans[nqc:]])
        )
        # 3. replay each chunk with a graph and push dL/de into the weights
        for (base, s), state, g in zip(spans, states, grads):
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                state.restore()
                e = self.embed(texts[base + s.start : base + s.stop])
                e.backward(g.to(e.dtype))
        return loss.item()
